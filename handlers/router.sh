#!/bin/sh
# One handler for every event, dispatching on SERF_EVENT to the example scripts
# beside it. Wire it for all events:
#   serf-trio agent --event-handler handlers/router.sh
# Edit the case table to route your own events. stdin and the SERF_* variables pass
# through unchanged, and so does the routed script's output (for a query, that
# output is the response).
set -eu

dir=$(dirname -- "$0")

case "${SERF_EVENT:-}" in
    member-join)
        exec /bin/sh "$dir/member-join-logger.sh"
        ;;
    member-leave | member-failed | member-update | member-reap)
        # Logged by the same script; it writes SERF_EVENT into every line.
        exec /bin/sh "$dir/member-join-logger.sh"
        ;;
    user)
        case "${SERF_USER_EVENT:-}" in
            deploy) exec /bin/sh "$dir/deploy.sh" ;;
        esac
        ;;
    query)
        exec /bin/sh "$dir/query-responder.sh"
        ;;
    *)
        echo "router: unknown SERF_EVENT '${SERF_EVENT:-}'" >&2
        exit 1
        ;;
esac

# No route for this event: read stdin to its end so the agent's write never fails.
cat > /dev/null
