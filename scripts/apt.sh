# Sourced by scripts/setup.sh and scripts/test.sh: apt installs that wait for the package manager.
APT_LOCK_TIMEOUT_S=${APT_LOCK_TIMEOUT_S:-900}

# apt_retry CMD...: runs an apt-get command, waiting while another package manager (unattended
# upgrades, a second setup) holds one of apt's locks instead of giving up, and says so once.
# (`DPkg::Lock::Timeout` covers dpkg's lock but not `apt-get update`'s lists lock.)
apt_retry() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT_S)) said=0 err
    while :; do
        if err=$("$@" 2>&1 >/dev/null); then return 0; fi
        if ! grep -q "Could not get lock\|Unable to lock\|Unable to acquire" <<<"$err" || [ "$SECONDS" -ge "$deadline" ]; then
            echo "$err" >&2
            return 1
        fi
        if [ "$said" = 0 ]; then
            echo "setup: another package manager holds apt's lock; waiting up to ${APT_LOCK_TIMEOUT_S} s" >&2
            said=1
        fi
        sleep 5
    done
}

# apt_install PKG...: `apt-get update` and install, each waiting for apt's locks.
apt_install() {
    echo "setup: installing $* with apt" >&2
    apt_retry apt-get -qq update \
        && apt_retry apt-get -o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}" -qq install -y "$@"
}

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
