#!/bin/sh
# Log each member of a member event, one line per member, to a log file (default
# ./serf-members.log, override with MEMBER_LOG). Wire it with:
#   serf-trio agent --event-handler member-join=handlers/member-join-logger.sh
# stdin holds one line per member: NAME<TAB>IP<TAB>ROLE<TAB>k=v,k=v (tabs and
# newlines inside the fields arrive as the two characters \t and \n). awk -F keeps
# empty fields (a member without a role), which `read` with IFS=<TAB> would merge.
set -eu

log=${MEMBER_LOG:-./serf-members.log}
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

awk -F '\t' -v now="$now" -v ev="${SERF_EVENT:-member-join}" \
    -v self="${SERF_SELF_NAME:-?}" \
    '{ printf "%s %s seen-by=%s name=%s ip=%s role=%s tags=%s\n", now, ev, self, $1, $2, $3, $4 }' \
    >> "$log"
