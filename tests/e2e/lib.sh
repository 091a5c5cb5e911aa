# shellcheck shell=bash
# Shared pieces of the end-to-end runs (sourced, not run).
#
# A run: start the broker (`vfio-apple serve`) on the host, boot a Debian
# kernel under TCG in the trixie root's QEMU 11.1 with both vfio-user-pci
# devices, let the guest's /workload.sh print "VFA-RESULT key=value" lines on
# the serial console, then assert on those lines and on the broker's control
# socket.  Everything is bounded by timeouts and torn down by an EXIT trap.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
PROVISION=$REPO/provision

e2e_fail=0
e2e_pass=0
broker_pid=""
broker2_pid=""
poller_pid=""
qemu_pid=""

# Debian's python3 (meson needs it, so it is there) for JSON and sockets.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

say() { echo "e2e: $*"; }
die() {
	echo "e2e: $*" >&2
	exit 1
}

# PASS/FAIL one assertion, counting; never exits.
check() {
	local what=$1
	shift
	if "$@"; then
		echo "e2e:   ok    $what"
		e2e_pass=$((e2e_pass + 1))
	else
		echo "e2e:   FAIL  $what"
		e2e_fail=$((e2e_fail + 1))
	fi
}

# The vfio-apple binary: $VFA_BIN, else ./build's (make check built it).
find_vfio_apple() {
	VFA_BIN=${VFA_BIN:-$REPO/${BUILD:-build}/cli/vfio-apple}
	[ -x "$VFA_BIN" ] || die "no vfio-apple at $VFA_BIN: run 'make build' (or set VFA_BIN)"
	"$VFA_BIN" serve --help >/dev/null 2>&1 || die "$VFA_BIN has no working 'serve' command"
}

provision_env() {
	[ "$(id -u)" = 0 ] || die "the e2e runs need root (chroot, mount namespaces)"
	local out
	out=$("$PROVISION/provision.sh" "$@") || die "provisioning failed (see above)"
	eval "$out"
}

# A fresh work directory (short path: UNIX socket paths are limited).
make_work() {
	WORK=$(mktemp -d /tmp/vfa-e2e.XXXXXX)
	mkdir -p "$WORK/sock"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

cleanup() {
	local rc=$?
	[ -n "$poller_pid" ] && kill "$poller_pid" 2>/dev/null && wait "$poller_pid" 2>/dev/null
	# QEMU (under `timeout`, which passes the signal on); its mounts lived
	# in a private namespace and vanish with it.
	if [ -n "$qemu_pid" ]; then
		kill -TERM "$qemu_pid" 2>/dev/null
		wait "$qemu_pid" 2>/dev/null
	fi
	local pid
	for pid in "$broker_pid" "$broker2_pid"; do
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null
			for _ in $(seq 30); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	if [ "${E2E_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
		echo "e2e: logs kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	return $rc
}

# start_broker NAME DEVICE_SPEC: serve with sockets in $WORK/sock.
start_broker() {
	local name=$1 spec=$2 i
	BROKER_LOG=$WORK/$name.broker.log
	rm -f "$WORK"/sock/*.sock
	# A broker still running from an earlier start_broker goes first.
	[ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null && stop_broker_only
	# With a posted companion (E2E_COMPANION_POSTED=1) the broker runs at
	# nice 19, so that it does not preempt the vCPU that rang a doorbell
	# and make the posted write look synchronous (see README.md).
	local prio=()
	[ "${E2E_COMPANION_POSTED:-0}" = 1 ] && prio=(nice -n 19)
	# --pdeathsig: the broker gets SIGTERM even if this script is SIGKILLed.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
		setpriv --pdeathsig TERM -- "${prio[@]}" "$VFA_BIN" serve -d "$spec" -s "$WORK/sock" -g 00:05.0 -l info >"$BROKER_LOG" 2>&1 &
	broker_pid=$!
	for i in $(seq 100); do
		[ -S "$WORK/sock/passthrough.sock" ] && [ -S "$WORK/sock/companion.sock" ] &&
			[ -S "$WORK/sock/control.sock" ] && return 0
		kill -0 "$broker_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$BROKER_LOG" >&2
	die "the broker ($spec) did not create its three sockets in $WORK/sock"
}

# One JSON answer from the control socket on stdout (exit 1 when none);
# BROKER_SOCK_DIR picks another broker's sockets (default $WORK/sock).
broker_status() {
	"$PYTHON" - "${BROKER_SOCK_DIR:-$WORK/sock}/control.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(b"status\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    json.loads(data)
    sys.stdout.write(data.decode().strip() + "\n")
except Exception as e:
    sys.stderr.write("e2e: no status from the broker: %s\n" % e)
    sys.exit(1)
EOF
}

# json_get FILE dotted.key: a number or string from a saved status line.
json_get() {
	"$PYTHON" -c '
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v[k]
print(v)' "$1" "$2" 2>/dev/null
}

# While the guest runs, keep the broker's latest status in $WORK/NAME.status
# (counters are read while the devices are still in use).
start_status_poller() {
	local file=$WORK/$1.status
	(
		# Ends with its parent too ($$ is the script's PID in a subshell).
		while kill -0 $$ 2>/dev/null && sleep 1; do
			broker_status >"$file.new" 2>/dev/null && mv "$file.new" "$file"
		done
	) &
	poller_pid=$!
}
stop_status_poller() {
	[ -n "$poller_pid" ] && kill "$poller_pid" 2>/dev/null && wait "$poller_pid" 2>/dev/null
	poller_pid=""
	return 0
}

# stop_broker: SIGTERM, wait (bounded); sets broker_rc.  Also fails the
# run when the broker's log holds a sanitizer report (VFA_BIN may be an
# ASan+UBSan build).
stop_broker() {
	stop_broker_only
	check "no sanitizer report in the broker's log" \
		eval '! grep -qE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$BROKER_LOG"'
}
stop_broker_only() {
	broker_rc=999
	kill -TERM "$broker_pid" 2>/dev/null
	for _ in $(seq 100); do
		if ! kill -0 "$broker_pid" 2>/dev/null; then
			wait "$broker_pid"
			broker_rc=$?
			broker_pid=""
			return 0
		fi
		sleep 0.1
	done
	kill -KILL "$broker_pid" 2>/dev/null
	wait "$broker_pid" 2>/dev/null
	broker_pid=""
}

# run_x86_guest NAME KERNEL INITRD TIMEOUT_S [extra QEMU args...]
# Boots q35 under TCG with the passthrough function at 00:05.0 and the
# companion at 00:06.0; the console goes to $WORK/NAME.console.
run_x86_guest() {
	GUEST_ARCH=amd64 run_guest "$@"
}
# The same on arm64: virt, -cpu max, direct kernel boot (no firmware).
# GUEST_FIRMWARE=seabios boots x86 with SeaBIOS instead of qboot.
run_arm64_guest() {
	GUEST_ARCH=arm64 run_guest "$@"
}
# iomem=relaxed: the workloads read device registers with devmem while a
# driver holds them.
GUEST_CMDLINE="panic=-1 quiet loglevel=4 iomem=relaxed"
run_guest() {
	local name=$1 kernel=$2 initrd=$3 limit=$4
	shift 4
	local qemu machine
	if [ "$GUEST_ARCH" = arm64 ]; then
		qemu=("${QEMU_ARM:?}" -machine virt,memory-backend=mem -cpu max)
		machine=(-append "console=ttyAMA0 $GUEST_CMDLINE")
	else
		qemu=("${QEMU_X86:?}" -machine q35,memory-backend=mem)
		# qboot by default: SeaBIOS probes NVMe devices with its own
		# driver, which faults in the DART before the guest kernel runs.
		[ "${GUEST_FIRMWARE:-qboot}" = qboot ] && qemu+=(-bios /usr/share/qemu/qboot.rom)
		machine=(-append "console=ttyS0 $GUEST_CMDLINE")
	fi
	CONSOLE=$WORK/$name.console
	local dev_pt dev_comp
	dev_pt='{"driver":"vfio-user-pci","socket":{"type":"unix","path":"'$WORK/sock/passthrough.sock'"},"addr":"0x5"}'
	# The companion's writes are not posted: a guest's DOORBELL write must
	# return only once the batch is done (guests written for the reference
	# never read STATUS; issue 16).  E2E_COMPANION_POSTED=1 leaves QEMU's
	# default (posted) to show what breaks.
	dev_comp='{"driver":"vfio-user-pci","socket":{"type":"unix","path":"'$WORK/sock/companion.sock'"},"addr":"0x6"'
	[ "${E2E_COMPANION_POSTED:-0}" = 1 ] || dev_comp+=',"x-no-posted-writes":true'
	dev_comp+='}'
	local t0=$SECONDS watcher
	# The broker's counters when the guest kernel reaches init: whatever
	# happened before (SeaBIOS probes NVMe devices with its own driver, so
	# its DMA faults in apple mode) is the firmware's, not the guest's.
	rm -f "$WORK/$name.atinit"
	(
		for _ in $(seq $((limit * 5))); do
			if grep -aq 'VFA-RESULT init=start' "$CONSOLE" 2>/dev/null; then
				broker_status >"$WORK/$name.atinit" 2>/dev/null
				exit 0
			fi
			sleep 0.2
		done
	) &
	watcher=$!
	# in-root.sh execs down to QEMU itself: `timeout` signals QEMU directly;
	# --pdeathsig makes `timeout` (and so QEMU) end if this script is killed.
	setpriv --pdeathsig TERM -- timeout -k 5 "$limit" "$PROVISION/in-root.sh" --bind "$WORK" --bind "$(dirname "$kernel")" --bind "$(dirname "$initrd")" -- \
		"${qemu[@]}" -accel tcg -nodefaults -no-reboot -display none -m 1G -smp 1 \
		-object memory-backend-memfd,id=mem,size=1G,share=on \
		-serial stdio -kernel "$kernel" -initrd "$initrd" "${machine[@]}" \
		-device "$dev_pt" -device "$dev_comp" "$@" \
		</dev/null >"$CONSOLE" 2>&1 &
	qemu_pid=$!
	# GUEST_KILL_ON=TEXT: SIGKILL QEMU (a crashing VMM) once TEXT is on
	# the console.  QEMU is the only child of `timeout` ($qemu_pid).
	local killer=""
	if [ -n "${GUEST_KILL_ON:-}" ]; then
		(
			for _ in $(seq $((limit * 5))); do
				if grep -aq "$GUEST_KILL_ON" "$CONSOLE" 2>/dev/null; then
					pkill -KILL -P "$qemu_pid"
					exit 0
				fi
				sleep 0.2
			done
		) &
		killer=$!
	fi
	# wait (unlike a foreground job) lets the INT/TERM trap run at once.
	# (stderr: no "Killed" job notice from bash when GUEST_KILL_ON struck)
	{ wait "$qemu_pid"; } 2>/dev/null
	GUEST_RC=$?
	[ -n "$killer" ] && { kill "$killer" 2>/dev/null; wait "$killer" 2>/dev/null; }
	qemu_pid=""
	GUEST_SECONDS=$((SECONDS - t0))
	kill "$watcher" 2>/dev/null
	wait "$watcher" 2>/dev/null
	[ $GUEST_RC -eq 124 ] && say "guest $name hit the ${limit} s limit"
	say "guest $name: QEMU exit $GUEST_RC after $GUEST_SECONDS s; results:"
	grep -a 'VFA-RESULT' "$CONSOLE" | grep -av 'VFA-RESULT ad_' | tr -d '\r' | sed 's/^/e2e:     /'
	return 0
}

# wait_console TEXT SECONDS [PID]: true once TEXT is on $CONSOLE; false
# after SECONDS, or at once when PID (what writes the console) has ended.
wait_console() {
	local _
	for _ in $(seq $(($2 * 5))); do
		grep -aq "$1" "$CONSOLE" 2>/dev/null && return 0
		[ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
		sleep 0.2
	done
	return 1
}

# result KEY: the value of the last "VFA-RESULT ... KEY=value" on the console.
result() {
	grep -a 'VFA-RESULT' "$CONSOLE" | tr -d '\r' | tr ' ' '\n' | sed -n "s/^$1=//p" | tail -n1
}

# show_failure_context: the end of the console and the broker log.
show_context() {
	echo "---- last console lines ($CONSOLE) ----"
	tail -n 40 "$CONSOLE" | tr -d '\r'
	echo "---- last broker log lines ($BROKER_LOG) ----"
	tail -n 20 "$BROKER_LOG"
	echo "----"
}

# Assertion helpers for check().
eq() { [ "$1" = "$2" ]; }
gt() { [ -n "$1" ] && [ "$1" -gt "$2" ] 2>/dev/null; }
ge() { [ -n "$1" ] && [ "$1" -ge "$2" ] 2>/dev/null; }
