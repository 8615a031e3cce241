#!/usr/bin/env bash
# Checks what streamwise needs outside Python: python3 >= 3.11, java >= 17 (the Kafka 4
# broker), mvn (fetches Kafka from Maven Central) and libgomp1 (LightGBM). On Debian/Ubuntu
# as root, installs what is missing with apt-get; elsewhere says what to install.
set -euo pipefail
missing=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || missing+=("python3>=3.11")
java_ok() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); exit !(v[1] >= 17)}'; }
command -v java >/dev/null && java_ok || missing+=("java>=17")
command -v mvn >/dev/null || missing+=("maven")
# LightGBM (the fraud model's trainer, used by the tests) links the GNU OpenMP runtime.
ldconfig -p 2>/dev/null | grep -q 'libgomp\.so\.1' || missing+=("libgomp1")
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  pkgs=()
  for m in "${missing[@]}"; do
    case "$m" in
      java*) pkgs+=(default-jre-headless) ;;
      maven) pkgs+=(maven) ;;
      libgomp1) pkgs+=(libgomp1) ;;
      python*) echo "streamwise needs Python 3.11 or newer as python3" >&2; exit 1 ;;
    esac
  done
  echo "installing ${pkgs[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  exit 0
fi
echo "streamwise needs: ${missing[*]} (install them, then run make again)" >&2
exit 1
