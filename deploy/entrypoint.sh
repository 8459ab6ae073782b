#!/bin/sh
# The image's entry point: `web` and `worker` run the Procfile's line of that name (one
# source for every platform), anything else runs as given (`check` is the preflight).
set -eu
cd /app
case "${1:-web}" in
    web | worker)
        line=$(sed -n "s/^$1:[[:space:]]*//p" Procfile)
        [ -n "$line" ] || { echo "entrypoint: no '$1' line in the Procfile" >&2; exit 2; }
        # exec twice: the process itself becomes PID 1 and gets docker stop's SIGTERM.
        exec sh -c "exec $line"
        ;;
    check)
        shift
        exec python -m callrec check "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
