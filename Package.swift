// swift-tools-version:6.0
// StarKV — record, replay and report KV-cache compression for GUI-agent VLMs.
//
// The targets follow the data's journey:
//   StarKVModel (model geometry) → StarKVTrace (trace format) → StarKVSynth (synthetic agent)
//   → StarKVPolicies (KV-compression policies) → StarKVMemory (GPU memory / FLOP simulator)
//   → StarKVReplay (replay engine) → StarKVReport (reports) → starkv (thin CLI).
// C libraries come from Debian packages through system-library targets (see Makefile `deps`).
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "StarKV",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "starkv", targets: ["starkv"]),
        .library(name: "StarKVTrace", targets: ["StarKVTrace"]),
        .library(name: "StarKVPolicies", targets: ["StarKVPolicies"]),
        .library(name: "StarKVMemory", targets: ["StarKVMemory"]),
        .library(name: "StarKVReplay", targets: ["StarKVReplay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C shims.
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CProtobufC", path: "Sources/CProtobufC", pkgConfig: "libprotobuf-c",
            providers: [.apt(["libprotobuf-c-dev"])]),
        .target(
            name: "CStarKVProto", dependencies: ["CProtobufC"], path: "Sources/CStarKVProto"),
        .target(name: "CStarKVSupport", path: "Sources/CStarKVSupport"),

        // Stages.
        .target(name: "StarKVModel", swiftSettings: strictSettings),
        .target(
            name: "StarKVTrace",
            dependencies: ["StarKVModel", "CZstd", "CStarKVProto", "CProtobufC", "CStarKVSupport"],
            swiftSettings: strictSettings),
        .target(
            name: "StarKVSynth", dependencies: ["StarKVModel", "StarKVTrace"],
            swiftSettings: strictSettings),
        .target(
            name: "StarKVPolicies", dependencies: ["StarKVModel", "StarKVTrace", "CStarKVSupport"],
            swiftSettings: strictSettings),
        .target(
            name: "StarKVMemory", dependencies: ["StarKVModel"], swiftSettings: strictSettings),
        .target(
            name: "StarKVReplay",
            dependencies: ["StarKVModel", "StarKVTrace", "StarKVPolicies", "StarKVMemory", "CStarKVSupport"],
            swiftSettings: strictSettings),
        .target(
            name: "StarKVReport", dependencies: ["StarKVReplay", "StarKVMemory", "StarKVTrace"],
            swiftSettings: strictSettings),
        .target(
            name: "StarKVSweep", dependencies: ["StarKVModel", "StarKVTrace", "StarKVPolicies", "StarKVReplay", "StarKVReport"],
            swiftSettings: strictSettings),
        .executableTarget(
            name: "starkv",
            dependencies: [
                "StarKVModel", "StarKVTrace", "StarKVSynth", "StarKVPolicies", "StarKVMemory",
                "StarKVReplay", "StarKVReport", "StarKVSweep", "CStarKVSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings),
        // The reader's libFuzzer target (`make fuzz`); built normally it replays inputs.
        .executableTarget(name: "starkv-fuzz", dependencies: ["StarKVTrace"], path: "Sources/starkv-fuzz"),

        // Tests mirror the modules.
        .testTarget(name: "StarKVModelTests", dependencies: ["StarKVModel"]),
        .testTarget(name: "StarKVTraceTests", dependencies: ["StarKVTrace", "StarKVModel"]),
        .testTarget(
            name: "StarKVSynthTests", dependencies: ["StarKVSynth", "StarKVTrace", "StarKVModel"]),
        .testTarget(
            name: "StarKVPoliciesTests",
            dependencies: ["StarKVPolicies", "StarKVTrace", "StarKVModel"]),
        .testTarget(name: "StarKVMemoryTests", dependencies: ["StarKVMemory", "StarKVModel"]),
        .testTarget(
            name: "StarKVReplayTests",
            dependencies: ["StarKVReplay", "StarKVSynth", "StarKVTrace", "StarKVModel"]),
        .testTarget(
            name: "StarKVReportTests", dependencies: ["StarKVReport", "StarKVReplay", "StarKVMemory", "StarKVModel"]),
        .testTarget(name: "StarKVSweepTests", dependencies: ["StarKVSweep", "StarKVReplay", "StarKVReport"]),
        .testTarget(name: "StarKVCLITests", dependencies: ["StarKVTrace"]),
    ]
)
