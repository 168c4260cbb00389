// StarKVSynth — module placeholder; see Package.swift for the stage this module implements.
