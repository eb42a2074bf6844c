# Reading `client bench` reports (sourced; no side effects, so a test can check them
# against a real report).
# The ops/s of a report's summary line ("3471 ops/s  (50000 ok, ...)") on stdin.
ops() { awk '$2 == "ops/s" && $1 ~ /^[0-9.]+$/ { print $1; exit }'; }
# The requests answered ok in a report, from its summary line ("... ops/s  (50000 ok, ...").
ok_count() { awk '$2 == "ops/s" && $1 ~ /^[0-9.]+$/ { sub(/^\(/, "", $3); print $3; exit }'; }
# The median of numbers on stdin, one per line.
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
