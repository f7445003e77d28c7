#!/usr/bin/env bash
# Demo of the embedded log: create a partitioned stream, feed it page views
# keyed by user, read them back, and follow the stream while a second process
# appends to it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p samza-log
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log() { "$target_dir/release/samza-log" --dir "$data" "$@"; }
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

echo '$ samza-log create page-views --partitions 4'
log create page-views --partitions 4
echo
echo '$ samza-log produce page-views --key-field user   (6 JSON lines on stdin)'
cat <<'JSON' | log produce page-views --key-field user
{"user":"alice","page":"/home"}
{"user":"bob","page":"/pricing"}
{"user":"alice","page":"/docs"}
{"user":"carol","page":"/home"}
{"user":"bob","page":"/signup"}
{"user":"alice","page":"/blog"}
JSON
echo
echo '$ samza-log consume page-views        (partition, offset, key, value)'
log consume page-views
echo
echo '$ samza-log describe page-views'
log describe page-views
echo
echo '$ samza-log consume page-views --from upcoming --follow --max 2   (while another process appends)'
log consume page-views --from upcoming --follow --max 2 &
follower=$!
sleep 0.5
printf 'dave,/home\nerin,/about\n' | log produce page-views --key-separator ,
wait "$follower"
