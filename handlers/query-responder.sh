#!/bin/sh
# Answers queries: whatever this script prints (stdout and stderr) and exits 0 with
# becomes this node's response, so print a short answer only (the response must fit
# the 1024-byte query response limit). Wire it with:
#   serf-trio agent --event-handler query:load=handlers/query-responder.sh
#   serf-trio query load
# Query names understood: load (the 1-minute load average), uptime, and anything
# else answers with the node name and its role.
set -eu

cat > /dev/null  # the query payload is not used here

case "${SERF_QUERY_NAME:-}" in
    load)
        if [ -r /proc/loadavg ]; then
            cut -d ' ' -f 1 /proc/loadavg | tr -d '\n'
        else
            uptime | sed 's/.*load averages*: //' | cut -d , -f 1 | tr -d '\n'
        fi
        ;;
    uptime)
        uptime | tr -d '\n'
        ;;
    *)
        printf '%s role=%s' "${SERF_SELF_NAME:-?}" "${SERF_SELF_ROLE:-none}"
        ;;
esac
