# Sourced by the study scripts (tools/compare_study.sh, tools/study2.sh): their shared two-slot queue.
# queue DIR: run the commands read from stdin (one per line, as a shell would read them) two at a time, each
# one's output in a file of DIR/logs/; a failed command prints one line naming its log, and the others go on.
# Each line is handed over as an argument and run with eval, so nothing in it is expanded twice (a sweep's
# '${run.dir}' stays for the trainer to resolve).
queue() {
  mkdir -p "$1/logs"
  nice -n 19 xargs -d '\n' -P 2 -n 1 sh -c \
    'log="$0/$(date +%s%N).log"; eval "$1" > "$log" 2>&1 || echo "failed ($log): $1"' "$1/logs"
}
