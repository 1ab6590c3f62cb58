#!/usr/bin/env bash
# kind-deploy.sh runs paytoview-operator on a local kind cluster, with the
# Stripe emulator standing in for Stripe (config/emulator): it creates the
# cluster if needed, builds the image and loads it into the cluster, creates
# development Secrets, installs the operator and the sample Products, and
# prints how to reach the API. Run it again after a code change to rebuild
# and roll out. Needs Docker, kind and kubectl; see docs/deploy.md.
#
# Settings (environment):
#   KIND_CLUSTER  kind cluster name               (default paytoview)
#   IMG           image to build and load         (default paytoview-operator:dev)
#   KUSTOMIZE     kustomize binary                (default bin/kustomize-*, else kubectl kustomize)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${KIND_CLUSTER:-paytoview}
IMG=${IMG:-paytoview-operator:dev}
NAMESPACE=paytoview-system
CONTEXT=kind-${CLUSTER}
MANAGER=paytoview-controller-manager
EMULATOR=paytoview-stripe-emulator
OVERLAY=.dev/kind
ENV_FILE=.dev/kind.env

die() {
	echo "kind-deploy: $*" >&2
	exit 1
}

need() {
	command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"
}

k() {
	kubectl --context "${CONTEXT}" "$@"
}

# rand_hex N prints N random bytes as hex.
rand_hex() {
	od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

kustomize_build() {
	if [[ -n ${KUSTOMIZE:-} ]]; then
		"${KUSTOMIZE}" build "$1"
		return
	fi
	local found=()
	shopt -s nullglob
	found=(bin/kustomize-*)
	shopt -u nullglob
	if ((${#found[@]} > 0)); then
		"${found[${#found[@]}-1]}" build "$1"
	else
		kubectl kustomize "$1"
	fi
}

# b64url encodes stdin as unpadded base64url, as JWTs want.
b64url() {
	openssl base64 -A | tr '+/' '-_' | tr -d '='
}

# jwt_hs256 SECRET PAYLOAD prints a JWT signed with HS256.
jwt_hs256() {
	local header payload sig
	header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
	payload=$(printf '%s' "$2" | b64url)
	sig=$(printf '%s.%s' "${header}" "${payload}" | openssl dgst -binary -sha256 -hmac "$1" | b64url)
	printf '%s.%s.%s' "${header}" "${payload}" "${sig}"
}

# write_overlay renders the image name into a git-ignored overlay of
# config/emulator, so nothing under config/ changes.
write_overlay() {
	local name=${IMG%@*} tag="" digest="" last
	if [[ ${IMG} == *@* ]]; then
		digest=${IMG#*@}
	fi
	last=${name##*/}
	if [[ ${last} == *:* ]]; then
		tag=${last##*:}
		name=${name%:*}
	fi
	mkdir -p "${OVERLAY}"
	{
		echo "# Written by hack/kind-deploy.sh; config/emulator with IMG=${IMG}."
		echo "apiVersion: kustomize.config.k8s.io/v1beta1"
		echo "kind: Kustomization"
		echo "resources:"
		echo "- ../../config/emulator"
		echo "images:"
		echo "- name: paytoview-operator"
		echo "  newName: ${name}"
		if [[ -n ${tag} ]]; then echo "  newTag: \"${tag}\""; fi
		if [[ -n ${digest} ]]; then echo "  digest: ${digest}"; fi
	} >"${OVERLAY}/kustomization.yaml"
}

# ensure_secret NAME KEY=VALUE... creates a Secret unless it exists, so
# that a re-run keeps the tokens and webhook secret already handed out.
ensure_secret() {
	local name=$1
	shift
	if k -n "${NAMESPACE}" get secret "${name}" >/dev/null 2>&1; then
		echo "Secret ${name} exists; keeping it"
		return
	fi
	local args=()
	for kv in "$@"; do
		args+=("--from-literal=${kv}")
	done
	k -n "${NAMESPACE}" create secret generic "${name}" "${args[@]}"
}

secret_value() {
	k -n "${NAMESPACE}" get secret "$1" -o "jsonpath={.data.$2}" | openssl base64 -d -A
}

main() {
	need docker "https://docs.docker.com/get-docker/"
	need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
	need kubectl "https://kubernetes.io/docs/tasks/tools/"
	need openssl "to mint the development tokens"
	docker info >/dev/null 2>&1 || die "docker does not answer: is the Docker daemon running?"

	if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
		echo "using kind cluster ${CLUSTER}"
	else
		kind create cluster --name "${CLUSTER}" --wait 120s
	fi

	docker build -t "${IMG}" .
	kind load docker-image "${IMG}" --name "${CLUSTER}"

	# The namespace and the Secrets come first, so the pods start at once
	# instead of waiting for Secrets that do not exist yet.
	if ! k get namespace "${NAMESPACE}" >/dev/null 2>&1; then
		k create namespace "${NAMESPACE}"
	fi
	ensure_secret paytoview-stripe \
		"STRIPE_SECRET_KEY=sk_test_kind_$(rand_hex 12)" \
		"STRIPE_WEBHOOK_SECRETS=whsec_$(rand_hex 24)"
	ensure_secret paytoview-auth "hs256-secret=$(rand_hex 32)"

	local existed=false
	if k -n "${NAMESPACE}" get deployment "${MANAGER}" >/dev/null 2>&1; then
		existed=true
	fi
	write_overlay
	kustomize_build "${OVERLAY}" | k apply --server-side --force-conflicts -f -
	if [[ ${existed} == true ]]; then
		# Same tag, new image: restart to pick it up. The emulator forgets
		# its state; Purchases keep theirs.
		k -n "${NAMESPACE}" rollout restart deployment/"${MANAGER}" deployment/"${EMULATOR}"
	fi

	k wait --for condition=Established --timeout=60s \
		crd/products.paytoview.md-platform.io crd/purchases.paytoview.md-platform.io crd/customers.paytoview.md-platform.io
	k apply --server-side -n "${NAMESPACE}" -k config/samples

	k -n "${NAMESPACE}" rollout status deployment/"${EMULATOR}" --timeout=180s
	k -n "${NAMESPACE}" rollout status deployment/"${MANAGER}" --timeout=300s

	local hs256 whsec now user_token admin_token
	hs256=$(secret_value paytoview-auth hs256-secret)
	whsec=$(secret_value paytoview-stripe STRIPE_WEBHOOK_SECRETS)
	now=$(date +%s)
	user_token=$(jwt_hs256 "${hs256}" "{\"sub\":\"dev-user-1\",\"iat\":${now},\"exp\":$((now + 86400))}")
	admin_token=$(jwt_hs256 "${hs256}" "{\"sub\":\"dev-admin\",\"roles\":[\"admin\"],\"iat\":${now},\"exp\":$((now + 86400))}")

	umask 077
	cat >"${ENV_FILE}" <<EOF
KUBE_CONTEXT=${CONTEXT}
PAYTOVIEW_NAMESPACE=${NAMESPACE}
PAYTOVIEW_API_URL=http://localhost:8080
PAYTOVIEW_EMULATOR_URL=http://localhost:12112
PAYTOVIEW_USER_TOKEN=${user_token}
PAYTOVIEW_ADMIN_TOKEN=${admin_token}
PAYTOVIEW_AUTH_HS256_SECRET=${hs256}
STRIPE_WEBHOOK_SECRET=${whsec}
EOF

	cat <<EOF

paytoview-operator runs on kind cluster ${CLUSTER} (context ${CONTEXT}), namespace ${NAMESPACE},
with the Stripe emulator in place of Stripe. Tokens (valid 24h) and URLs are in ${ENV_FILE}.

Reach the API and the emulator (in another terminal, or with &):
  kubectl --context ${CONTEXT} -n ${NAMESPACE} port-forward svc/paytoview-api 8080:8080
  kubectl --context ${CONTEXT} -n ${NAMESPACE} port-forward svc/${EMULATOR} 12112:12112

Buy the sample "video-7-days" for video-1, pay in the emulator, and list your purchases (needs jq):
  set -a; source ${ENV_FILE}; set +a
  secret=\$(curl -sS -H "Authorization: Bearer \$PAYTOVIEW_USER_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"payToViewProductId":"video-7-days","entityId":"video-1","returnUrl":"http://localhost:3000/done"}' \\
    \$PAYTOVIEW_API_URL/client/v1/pay-to-view/purchases | jq -r .clientSecret)
  curl -sS -X POST \$PAYTOVIEW_EMULATOR_URL/_emulator/v1/checkout/sessions/\$secret/pay >/dev/null
  curl -sS -H "Authorization: Bearer \$PAYTOVIEW_USER_TOKEN" \$PAYTOVIEW_API_URL/client/v1/pay-to-view/purchases | jq
  kubectl --context ${CONTEXT} -n ${NAMESPACE} get ptv

Logs:    kubectl --context ${CONTEXT} -n ${NAMESPACE} logs deploy/${MANAGER} -f
Remove:  kind delete cluster --name ${CLUSTER}
EOF
}

# Sourcing the script (as test/manifests does) defines its functions only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
