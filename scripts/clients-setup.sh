#!/usr/bin/env bash
# Install the pinned toolchains of the TypeScript and Go clients (`make clients-setup`); safe to re-run.
#
# - Debian packages: Go, protoc, protoc-gen-go, protoc-gen-go-grpc and the Go libraries the Go client
#   builds against (installed with apt-get when missing; needs root, as in CI).
# - TypeScript: `npm ci` from clients/ts/package-lock.json (when the lock file changed).
# - Go: no module proxy is needed. clients/go/go.mod pins the upstream versions that Debian packages;
#   clients/go/vendor/ is assembled from Debian's sources under /usr/share/gocode/src, after checking
#   that each installed package carries exactly the version go.mod names, and builds use -mod=vendor.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
  golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  golang-google-genproto-dev golang-golang-x-net-dev golang-golang-x-sys-dev golang-golang-x-text-dev
)
# What the generated headers and the build depend on; Debian stable only takes security fixes, so a
# change here means the generated code would change too: fail loudly rather than drift.
EXPECTED_GO="go1.19"
EXPECTED_PROTOC="libprotoc 3.21.12"
EXPECTED_PROTOC_GEN_GO="protoc-gen-go v1.28.1"
EXPECTED_PROTOC_GEN_GO_GRPC="protoc-gen-go-grpc 1.0"
GOCODE=/usr/share/gocode/src

die() { echo "clients-setup: $*" >&2; exit 1; }

install_debian_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "== apt-get install ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    die "run as root, or: sudo apt-get install ${missing[*]}"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

expect_version() {
  local what=$1 expected=$2 actual=$3
  [[ "$actual" == "$expected"* ]] || die "$what is '$actual', expected '$expected' (generated code would change)"
}

check_tool_versions() {
  expect_version go "go version $EXPECTED_GO" "$(go version)"
  expect_version protoc "$EXPECTED_PROTOC" "$(protoc --version)"
  expect_version protoc-gen-go "$EXPECTED_PROTOC_GEN_GO" "$(protoc-gen-go --version 2>&1)"
  expect_version protoc-gen-go-grpc "$EXPECTED_PROTOC_GEN_GO_GRPC" "$(protoc-gen-go-grpc --version 2>&1)"
}

install_node_modules() {
  local stamp=clients/ts/node_modules/.package-lock.json
  if [ -f "$stamp" ] && [ "$stamp" -nt clients/ts/package-lock.json ]; then
    return
  fi
  echo "== npm ci (clients/ts)"
  npm ci --prefix clients/ts --no-audit --no-fund --loglevel=error
}

# The Debian package version of a module's sources must be the version go.mod requires:
# "1:0.7.0+dfsg-1" is v0.7.0; "0.0~git20200413.b5235f6-3" is the pseudo-version of that date and commit.
check_module_version() {
  local module=$1 version=$2 pkg deb upstream
  pkg=$(dpkg-query -S "$GOCODE/$module/go.mod" 2> /dev/null | head -n1 | cut -d: -f1) \
    || die "$module: no Debian package provides $GOCODE/$module"
  deb=$(dpkg-query -W -f='${Version}' "$pkg")
  upstream=${deb#*:}
  upstream=${upstream%-*}
  upstream=${upstream%%+*}
  if [[ "$upstream" =~ ~git([0-9]{8})\.([0-9a-f]+)$ ]]; then
    [[ "$version" == *-"${BASH_REMATCH[1]}"*-"${BASH_REMATCH[2]}"* ]] \
      || die "$module: Debian's $pkg $deb is not $version"
  else
    [ "v$upstream" = "$version" ] || die "$module: Debian's $pkg $deb is not $version"
  fi
}

assemble_go_vendor() {
  local vendor=clients/go/vendor module version go_directive
  rm -rf "$vendor"
  mkdir -p "$vendor"
  : > "$vendor/modules.txt"
  # Every `require` of go.mod (one per line inside the blocks), direct and indirect alike.
  while read -r module version; do
    [ -d "$GOCODE/$module" ] || die "$module: not under $GOCODE (missing Debian package?)"
    check_module_version "$module" "$version"
    mkdir -p "$vendor/$(dirname "$module")"
    ln -s "$GOCODE/$module" "$vendor/$module"
    go_directive=$(awk '$1 == "go" { print $2; exit }' "$GOCODE/$module/go.mod")
    printf '# %s %s\n## explicit; go %s\n' "$module" "$version" "${go_directive:-1.11}" >> "$vendor/modules.txt"
    (cd "$GOCODE" && find -L "$module" -name '*.go' ! -name '*_test.go' ! -path '*/testdata/*' -printf '%h\n' | sort -u) \
      >> "$vendor/modules.txt"
  done < <(awk '/^require \($/ { inside = 1; next } inside && /^\)$/ { inside = 0 } inside { print $1, $2 }' clients/go/go.mod)
  echo "== clients/go/vendor assembled from Debian's Go sources"
}

install_debian_packages
check_tool_versions
install_node_modules
assemble_go_vendor
echo "clients toolchains ready: $(go version | cut -d' ' -f3), $(protoc --version), node $(node --version)"
