# Sourced by the study scripts (tools/compare_study.sh, tools/study2.sh): their shared two-slot queue.
# queue DIR: run the commands read from stdin (one per line) two at a time, each one's output in a file of
# DIR/logs/; a failed command prints one line and the others go on.
queue() {
  mkdir -p "$1/logs"
  nice -n 19 xargs -d '\n' -P 2 -I CMD sh -c 'CMD > "$0/$(date +%s%N).log" 2>&1 || echo "failed: CMD"' "$1/logs"
}
