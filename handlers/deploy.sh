#!/bin/sh
# Example handler for the user event "deploy": the payload is the version to roll out.
#   serf-trio agent --event-handler user:deploy=handlers/deploy.sh
#   serf-trio event deploy v1.2.3
# Serf delivers each user event once per node; the LTime lets a script ignore an
# older deploy that arrives after a newer one (state kept in DEPLOY_STATE).
set -eu

state=${DEPLOY_STATE:-./deploy.ltime}
ltime=${SERF_USER_LTIME:-0}
version=$(head -n 1)

last=0
if [ -f "$state" ]; then
    last=$(cat "$state")
fi
if [ "$ltime" -le "$last" ]; then
    echo "deploy: ignoring '$version' (ltime $ltime <= $last)" >&2
    exit 0
fi

if [ -z "$version" ]; then
    echo "deploy: empty payload, nothing to deploy" >&2
    exit 1
fi

echo "deploy: node ${SERF_SELF_NAME:-?} (role ${SERF_SELF_ROLE:-none}) deploying $version"
# Replace this line with the real work, e.g. a package install or a service restart.
printf '%s\n' "$ltime" > "$state"
