#!/usr/bin/env bash
# Revokes every NodeAccess in the cluster, before the operator is uninstalled:
# with the operator gone nothing removes keys from the nodes any more (an
# agent that stops leaves every file as it is, so that restarts and upgrades
# never revoke access).
#
#   hack/revoke-all.sh            # KUBECTL, KUBECONFIG and TIMEOUT (default 10m) from the environment
#
# It deletes every NodeAccess and waits until each is gone. The operator
# releases a deleted NodeAccess when every node has proven its keys removed,
# or after its --revocation-timeout with a RevocationUnconfirmed Warning
# naming the nodes that did not; those are listed here, and the script then
# fails: their keys may still be there, and their agents are about to go.
# `make undeploy` runs it first unless KEEP_KEYS=true; with OLM, run it before
# deleting the Subscription and the CSV (docs/usage.md, Uninstall).
set -euo pipefail
KUBECTL=${KUBECTL:-kubectl}
TIMEOUT=${TIMEOUT:-10m}

if ! $KUBECTL get crd nodeaccesses.nodeaccess.io >/dev/null 2>&1; then
	echo "revoke-all: the NodeAccess CRD is not installed; nothing to revoke"
	exit 0
fi
# Their UIDs: only the revocations of these objects are judged below (an
# earlier NodeAccess of the same name, or one deleted by someone else
# meanwhile, is not this uninstall's).
uids=$($KUBECTL get nodeaccesses -o jsonpath='{range .items[*]}{.metadata.uid}{" "}{end}')
names=$($KUBECTL get nodeaccesses -o name)
if [[ -z $names ]]; then
	echo "revoke-all: no NodeAccess objects"
	exit 0
fi
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "revoke-all: deleting $(wc -w <<<"$names") NodeAccess objects and waiting for the nodes to remove their keys"
$KUBECTL delete nodeaccesses --all --wait=false >/dev/null
# And any created meanwhile that the delete took too (still terminating).
uids+=" $($KUBECTL get nodeaccesses -o jsonpath='{range .items[*]}{.metadata.uid}{" "}{end}' 2>/dev/null || true)"
if ! $KUBECTL wait --for=delete nodeaccesses --all --timeout="$TIMEOUT" >/dev/null 2>&1; then
	echo "revoke-all: still waiting after $TIMEOUT (is the operator running?):" >&2
	$KUBECTL get nodeaccesses -o custom-columns='NAME:.metadata.name,REASON:.status.conditions[?(@.type=="Progressing")].reason,NODES:.status.failingNodes[*].node' >&2 || true
	exit 1
fi
# NodeAccess is cluster-scoped: its Events are in the default namespace.
if ! events=$($KUBECTL get events -n default --field-selector reason=RevocationUnconfirmed \
	-o jsonpath='{range .items[*]}{.lastTimestamp}{.eventTime}{"\t"}{.involvedObject.uid}{"\t"}{.involvedObject.name}{"\t"}{.message}{.note}{"\n"}{end}'); then
	echo "revoke-all: cannot list the RevocationUnconfirmed Events: whether every node proved its keys removed is not known" >&2
	exit 1
fi
unconfirmed=$(awk -F'\t' -v since="$since" -v uids="$uids" 'BEGIN {n = split(uids, u, " "); for (i = 1; i <= n; i++) ours[u[i]] = 1}
	$1 >= since && ($2 in ours) {print "  " $3 ": " $4}' <<<"$events")
if [[ -n $unconfirmed ]]; then
	echo "revoke-all: these revocations were not confirmed by every node; their keys may still be there:" >&2
	echo "$unconfirmed" >&2
	exit 1
fi
echo "revoke-all: every node proved every key removed"
