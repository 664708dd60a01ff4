# Shared helpers for scripts/: idempotent installs and step banners.

step() { printf '\n==> %s\n' "$*"; }

# Installs the tools the tests and the benchmark use, only where missing.
install_prereqs() {
  local need=()
  command -v fio >/dev/null 2>&1 || need+=(fio)
  command -v socat >/dev/null 2>&1 || need+=(socat)
  command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
  command -v mount >/dev/null 2>&1 || need+=(mount)
  command -v kill >/dev/null 2>&1 || need+=(procps)
  command -v dd >/dev/null 2>&1 || need+=(coreutils)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
  if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
  fi
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    step "installing rustfmt and clippy"
    rustup component add rustfmt clippy
  fi
}
