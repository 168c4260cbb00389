#!/usr/bin/env bash
# Peak RSS (GNU time -v) and exit status of validate / inspect / dump / replay on each hostile
# input of README "Damaged and hostile traces". usage: scripts/hostile_rss.sh [STARKV_BIN] [FUZZ_BIN]
# (both built with `swift build -c release --product starkv` / `--product starkv-fuzz`).
set -u
BIN=${1:-.build/release/starkv}
FUZZ=${2:-.build/release/starkv-fuzz}
DIR=$(mktemp -d)
"$FUZZ" --make-hostile "$DIR" || exit 1
printf "%-38s %10s  %-9s %-9s %-9s %-9s\n" input bytes validate inspect dump replay
for f in "$DIR"/*.starkv; do
  row=""
  for cmd in validate inspect dump replay; do
    case $cmd in
      dump) args=(dump "$f" --step 0 --field win_sum --layer 0) ;;
      replay) args=(replay "$f" --policies 'snapkv(window=2)' --budgets 20 --quiet --out "$DIR/report-$(basename "$f")") ;;
      *) args=("$cmd" "$f") ;;
    esac
    /usr/bin/time -v -o "$DIR/time.txt" "$BIN" "${args[@]}" >/dev/null 2>&1
    rc=$(sed -n 's/.*Exit status: //p' "$DIR/time.txt")
    kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$DIR/time.txt")
    row+=$(printf " %-9s" "$rc/$((kb / 1024))M")
  done
  printf "%-38s %10s %s\n" "$(basename "$f")" "$(stat -c %s "$f")" "$row"
done
rm -rf "$DIR"
