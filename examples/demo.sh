#!/usr/bin/env bash
# End-to-end demo of the page-view example: feed page views into the embedded
# log, repartition them by user (job one), count them per user in RocksDB with
# a changelog (job two), and read a user's count from the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (release)..."
cargo build --release -q --workspace
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release"
export SAMZA_LOG_DIR="$PWD/samza-data/log"
rm -rf samza-data

echo
echo '$ samza-log create page-views --partitions 4'
"$bin/samza-log" create page-views --partitions 4
echo '$ (1000 page views of 5 users) | samza-log produce page-views   # no key: spread round-robin'
users=(alice bob carol dave erin)
pages=(/home /docs /pricing /blog /signup)
for i in $(seq 0 999); do
  printf '{"user":"%s","page":"%s","time":%d}\n' "${users[$((i * 7 % 5))]}" "${pages[$(((i * 3 + i / 5) % 5))]}" "$((1700000000000 + i))"
done | "$bin/samza-log" produce page-views

echo
echo '$ samza-run examples/jobs/page-views.toml --config systems.log.streams.page-views.bounded=true'
"$bin/samza-run" examples/jobs/page-views.toml \
  --config "package.binary=$bin/page-views" \
  --config systems.log.streams.page-views.bounded=true

echo
echo '$ samza-log describe page-views-by-user      # every user now lives in one partition'
"$bin/samza-log" describe page-views-by-user
echo
echo '$ samza-log consume page-views-by-user --max 8'
"$bin/samza-log" consume page-views-by-user --max 8
echo
echo
echo '$ samza-run examples/jobs/page-view-counter.toml --config systems.log.streams.page-views-by-user.bounded=true'
"$bin/samza-run" examples/jobs/page-view-counter.toml \
  --config "package.binary=$bin/page-view-counter" \
  --config systems.log.streams.page-views-by-user.bounded=true
echo
echo '$ samza-log get user-counts alice     # the count kept in RocksDB, as last emitted'
"$bin/samza-log" get user-counts alice
echo
echo "views per user and the partition holding them (from the repartitioned stream):"
"$bin/samza-log" consume page-views-by-user | awk -F'\t' '{n[$3]++; p[$3]=$1} END {for (u in n) printf "  %-6s %4d views, partition %s\n", u, n[u], p[u]}' | sort
