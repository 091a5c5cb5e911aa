#!/bin/bash
# The vfio-apple command, end to end: every subcommand and every error a
# person can meet, asserted on output and exit code.  QEMU is faked by
# scripts on PATH; the broker is the real one (serve).
#
# Usage: test_cli.sh PATH/TO/vfio-apple [PATH/TO/vfio-apple.1]
# CLI_WRAPPER="valgrind --error-exitcode=99 ..." runs every vfio-apple
# under a wrapper (the broker it starts itself excepted).
set -u

VFA=$1
[ -x "$VFA" ] || { echo "usage: $0 PATH/TO/vfio-apple"; exit 2; }
VFA=$(cd "$(dirname "$VFA")" && pwd)/$(basename "$VFA")
MAN=${2:-}
# The JSON and man-page checks below need these; never skip them silently.
for tool in python3 groff; do
	command -v "$tool" >/dev/null || {
		echo "test_cli.sh: $tool is required (scripts/install-deps.sh installs it)" >&2
		exit 1
	}
done
WRAP=(${CLI_WRAPPER:-})
# by absolute path: some cases run with a PATH that has no wrapper on it
[ ${#WRAP[@]} -gt 0 ] && WRAP[0]=$(command -v "${WRAP[0]}")

T=$(mktemp -d /tmp/vfa-cli.XXXXXX)
export VFA_CACHE=$T/empty-cache # never the provisioned QEMU: the fakes decide
mkdir -p "$VFA_CACHE" "$T/bin" "$T/old" "$T/none"
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT

passed=0
failed=0
ok() {
	echo "ok   $*"
	passed=$((passed + 1))
}
bad() {
	echo "FAIL $*"
	failed=$((failed + 1))
}

# run_cli NAME EXPECTED_RC NEEDLE ARGS...: the exit code must match and the
# combined output must contain NEEDLE (a fixed string).
run_cli() {
	local name=$1 want=$2 needle=$3
	shift 3
	OUT=$("${WRAP[@]}" "$VFA" "$@" 2>&1)
	local rc=$?
	if [ "$rc" != "$want" ]; then
		bad "$name: exit $rc, wanted $want; output: $OUT"
	elif [[ $OUT != *"$needle"* ]]; then
		bad "$name: output lacks '$needle': $OUT"
	else
		ok "$name"
	fi
}

# One line of error, no usage dump, for the actionable errors.
one_line() {
	local name=$1 n
	n=$(printf '%s\n' "$OUT" | grep -c .)
	if [ "$n" = 1 ]; then ok "$name: one line"; else bad "$name: $n lines: $OUT"; fi
}

wait_for() { # wait_for SECONDS COMMAND...: poll until it succeeds
	local limit=$(($1 * 10))
	shift
	for _ in $(seq "$limit"); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# ---- help, version, unknown ----------------------------------------------
run_cli "help" 0 "Usage: vfio-apple COMMAND" --help
run_cli "version" 0 "vfio-apple 0." --version
for cmd in serve run list status attach detach sim; do
	run_cli "$cmd --help" 0 "Usage: vfio-apple $cmd" "$cmd" --help
done
run_cli "no command" 2 "Usage: vfio-apple COMMAND"
run_cli "unknown command" 2 "unknown command 'frobnicate': use serve, run, list, status, attach, detach or sim" frobnicate
one_line "unknown command"
run_cli "unknown option" 2 "Usage: vfio-apple status" status --frob

# ---- list ------------------------------------------------------------------
run_cli "list" 0 "sim:nvme         simulated NVMe controller behind a simulated Apple DART" list
run_cli "list --json" 0 '"device": "sim:nvme"' list --json
if command -v python3 >/dev/null; then
	if printf '%s' "$OUT" | python3 -c 'import json,sys; a=json.load(sys.stdin); assert a[0]["device"]=="sim:nvme" and a[0]["kind"]=="simulated"'; then
		ok "list --json parses as a JSON array"
	else
		bad "list --json is not the expected JSON: $OUT"
	fi
fi
run_cli "list --pci-ids missing file" 0 "sim:nvme" list --pci-ids /nonexistent/pci.ids
run_cli "list extra argument" 2 "list takes no arguments" list foo

# ---- status without a broker ----------------------------------------------
run_cli "status, no broker" 1 "no broker is running at $T/nobroker/control.sock: start one with \`vfio-apple serve\`" \
	status --socket-dir "$T/nobroker"
one_line "status, no broker"
run_cli "status --json, no broker" 1 "no broker is running" status --json --control-socket "$T/x.sock"

# ---- serve: bad input -------------------------------------------------------
run_cli "serve bad device" 2 "bad device string 'nonsense': use sim:nvme" serve --device nonsense -s "$T/s0"
one_line "serve bad device"
run_cli "serve bad size" 2 "bad size '0x'" serve --device sim:nvme,size=0x -s "$T/s0"
run_cli "serve bad dart" 2 "use dart=apple or dart=identity" serve -d sim:nvme,dart=off -s "$T/s0"
run_cli "serve host BDF on Linux" 2 "needs macOS and the VFIOUserPCIDriver dext; on Linux use sim:nvme" \
	serve -d 03:00.0 -s "$T/s0"
run_cli "serve bad guest address" 2 "bad --guest-addr '00:40.0'" serve -g 00:40.0 -s "$T/s0"
run_cli "serve bad log level" 2 "bad --log-level 'loud'" serve -l loud -s "$T/s0"
run_cli "serve bad max entries" 2 "bad --max-entries '0'" serve --max-entries 0 -s "$T/s0"
run_cli "serve long socket dir" 2 "too long for a UNIX socket path" serve -s "/tmp/$(printf 'd%.0s' $(seq 120))"
run_cli "serve socket path is a file" 1 "exists and is not a socket" \
	serve -s "$T/s0" --control-socket "$T/bin"
[ ! -e "$T/s0/control.sock" ] && ok "nothing served after refusals" || bad "a socket exists after refusals"

# ---- serve + status with the real broker -----------------------------------
S=$T/s1/vfa0
"$VFA" serve -s "$S" -d sim:nvme,size=64M >"$T/serve1.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
if wait_for 10 test -S "$S/control.sock"; then
	ok "serve creates its sockets"
	run_cli "status table" 0 "device       sim:nvme,size=64M" status -s "$S"
	for needle in "pid $serve_pid," "passthrough  waiting" "companion    waiting" "of 65536 mappings" "of 1.5 GiB" \
		"faults     0" "doorbells  0" "delivered  0"; do
		[[ $OUT == *"$needle"* ]] && ok "status shows '$needle'" || bad "status lacks '$needle': $OUT"
	done
	run_cli "status --json" 0 "\"pid\":$serve_pid" status --json --control-socket "$S/control.sock"
	[[ $OUT == *'"max_bytes":1610612736'* ]] && ok "status --json has the DART limit" || bad "status --json: $OUT"
	run_cli "sim reset-companion" 0 "$S/control.sock: companion reset" sim reset-companion --control-socket "$S/control.sock"
	run_cli "status counts the companion reset" 0 '"orphaned_ids":0,"resets":1' status --json --control-socket "$S/control.sock"

	# a second broker on the same sockets: refused, the first untouched
	run_cli "serve, socket in use" 1 "socket $S/control.sock is in use by another process" serve -s "$S"
	one_line "serve, socket in use"
	kill -0 "$serve_pid" 2>/dev/null && ok "first broker still running" || bad "first broker died"

	# run whose first device's sockets (DIR/vfa0/) are taken: refused before QEMU
	printf '#!/bin/sh\necho "QEMU emulator version 11.1.3"\n' >"$T/bin/qemu-system-x86_64"
	chmod +x "$T/bin/qemu-system-x86_64"
	OUT=$(PATH="$T/bin:$PATH" "${WRAP[@]}" "$VFA" run -s "$T/s1" -- -nographic 2>&1)
	rc=$?
	[ $rc = 1 ] && [[ $OUT == *"is in use by another process"* ]] && ok "run, socket in use" ||
		bad "run, socket in use: exit $rc: $OUT"

	kill -TERM "$serve_pid"
	wait "$serve_pid"
	rc=$?
	[ $rc = 0 ] && ok "serve exits 0 on SIGTERM" || bad "serve exit $rc on SIGTERM: $(cat "$T/serve1.log")"
else
	bad "serve did not create $S/control.sock: $(cat "$T/serve1.log")"
fi

# a broker killed outright leaves stale sockets: the next one takes over
"$VFA" serve -s "$S" >"$T/serve2.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
wait_for 10 test -S "$S/control.sock"
kill -KILL "$serve_pid"
wait "$serve_pid" 2>/dev/null
[ -S "$S/control.sock" ] && ok "stale sockets left by a killed broker" || bad "no stale socket to test with"
"$VFA" serve -s "$S" >"$T/serve3.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
if wait_for 10 "$VFA" status -s "$S" >/dev/null 2>&1; then
	ok "serve replaces stale sockets"
else
	bad "serve over stale sockets: $(cat "$T/serve3.log")"
fi
kill -INT "$serve_pid"
wait "$serve_pid"
rc=$?
[ $rc = 0 ] && ok "serve exits 0 on SIGINT" || bad "serve exit $rc on SIGINT"

# a socket held by some other program (not a broker)
if command -v python3 >/dev/null; then
	mkdir -p "$T/s2"
	python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); time.sleep(30)' "$T/s2/passthrough.sock" &
holder=$!
pids+=("$holder")
	wait_for 5 test -S "$T/s2/passthrough.sock"
	run_cli "serve, socket held by another program" 1 "socket $T/s2/passthrough.sock is in use by another process" \
		serve -s "$T/s2"
	kill "$holder"
fi

# ---- run: QEMU checks --------------------------------------------------------
printf '#!/bin/sh\necho "QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)"\n' >"$T/old/qemu-system-x86_64"
chmod +x "$T/old/qemu-system-x86_64"
OUT=$(PATH="$T/old:/usr/bin:/bin" "${WRAP[@]}" "$VFA" run -s "$T/s3" -- -nographic 2>&1)
rc=$?
[ $rc = 1 ] && [[ $OUT == *"QEMU 7.2.0 at $T/old/qemu-system-x86_64 is too old: vfio-user-pci needs QEMU >= 10.1"* ]] &&
	ok "run, QEMU too old (version found and needed)" || bad "run, QEMU too old: exit $rc: $OUT"
one_line "run, QEMU too old"
OUT=$(PATH="$T/none" "${WRAP[@]}" "$VFA" run -s "$T/s3" -- -nographic 2>&1)
rc=$?
[ $rc = 1 ] && [[ $OUT == *"no qemu-system-x86_64 found (needs QEMU >= 10.1"* ]] &&
	ok "run, QEMU missing" || bad "run, QEMU missing: exit $rc: $OUT"
one_line "run, QEMU missing"
run_cli "run --qemu missing" 1 "--qemu /nonexistent/qemu: no such executable" run --qemu /nonexistent/qemu -s "$T/s3" -- -x
run_cli "run --qemu too old" 1 "QEMU 7.2.0 at $T/old/qemu-system-x86_64 is too old" run --qemu "$T/old/qemu-system-x86_64" -s "$T/s3" -- -x
[ ! -e "$T/s3/control.sock" ] && ok "no broker left after QEMU errors" || bad "a broker socket after QEMU errors"

# ---- run: guest RAM must stay shareable --------------------------------------
run_cli "run -m refused" 2 "refusing QEMU option -m: vfio-user needs guest RAM shared" run -s "$T/s3" -- -m 2G
one_line "run -m refused"
run_cli "run memory-backend-ram refused" 2 "guest RAM not shareable" \
	run -s "$T/s3" -- -object memory-backend-ram,id=m,size=1G
run_cli "run backend without share refused" 2 "lacks share=on" \
	run -s "$T/s3" -- -object memory-backend-file,id=m,size=1G,mem-path=/dev/shm/x
run_cli "run machine memory-backend refused" 2 "remove memory-backend=" run -s "$T/s3" -- -machine q35,memory-backend=m
run_cli "run bad memory" 2 "bad --memory 'lots'" run --memory lots -s "$T/s3" -- -x
run_cli "run bad device" 2 "unknown simulated device 'disk'" run -d sim:disk -s "$T/s3" -- -x
run_cli "run stray argument" 2 "unexpected argument 'bzImage': QEMU arguments go after --" run -s "$T/s3" bzImage

# ---- run: launcher with a fake QEMU 11.1 --------------------------------------
# It records its arguments and the broker's status, then exits with $FAKE_RC
# (or sleeps when FAKE_SLEEP is set).
cat >"$T/bin/qemu-system-x86_64" <<EOF
#!/bin/bash
if [ "\$1" = --version ]; then echo "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)"; exit 0; fi
printf '%s\n' "\$@" >"$T/qemu.args"
echo \$\$ >"$T/qemu.pid"
"$VFA" status --json -s "$T/s4" >"$T/qemu.status" 2>&1
if [ -n "\${FAKE_REQUESTS:-}" ]; then
	# run.sock while the VM runs: refusals, each one line (this QEMU has no QMP).
	"$VFA" detach -s "$T/s4" vfa9 >"$T/req.detach" 2>&1; echo "rc=\$?" >>"$T/req.detach"
	"$VFA" attach -s "$T/s4" sim:nvme,size=16M >"$T/req.attach" 2>&1; echo "rc=\$?" >>"$T/req.attach"
	"$VFA" attach -s "$T/s4" vfa0 >"$T/req.again" 2>&1; echo "rc=\$?" >>"$T/req.again"
	"$VFA" status --json -s "$T/s4" >"$T/req.status" 2>&1
fi
if [ -n "\${FAKE_MSIX:-}" ]; then
	# A function with MSI-X alone: QEMU 11.1 would abort on its unplug.
	"$VFA" detach -s "$T/s4" vfa0 >"$T/req.msix" 2>&1; echo "rc=\$?" >>"$T/req.msix"
fi
[ -n "\${FAKE_SLEEP:-}" ] && sleep "\$FAKE_SLEEP"
exit \${FAKE_RC:-0}
EOF
chmod +x "$T/bin/qemu-system-x86_64"

OUT=$(PATH="$T/bin:$PATH" "${WRAP[@]}" "$VFA" run -s "$T/s4" -m 2G -- -nographic -kernel /boot/bzImage 2>&1)
rc=$?
[ $rc = 0 ] && ok "run (launcher) exits with QEMU's 0" || bad "run (launcher): exit $rc: $OUT"
args=$(cat "$T/qemu.args" 2>/dev/null)
for needle in "memory-backend-memfd,id=vfa-ram,size=2G,share=on" "q35,memory-backend=vfa-ram" \
	"pcie-root-port,id=vfa-port0,bus=pcie.0,addr=0x2.0x0,chassis=64,port=0x40,multifunction=on" \
	"pcie-root-port,id=vfa-port3,bus=pcie.0,addr=0x2.0x3,chassis=67,port=0x43" \
	"{\"driver\":\"vfio-user-pci\",\"id\":\"vfa0\",\"bus\":\"vfa-port0\",\"addr\":\"0.1\",\"socket\":{\"type\":\"unix\",\"path\":\"$T/s4/vfa0/passthrough.sock\"}}" \
	"{\"driver\":\"vfio-user-pci\",\"id\":\"vfa0-dma\",\"bus\":\"vfa-port0\",\"addr\":\"0.0\",\"multifunction\":true,\"socket\":{\"type\":\"unix\",\"path\":\"$T/s4/vfa0/companion.sock\"},\"x-no-posted-writes\":true}" \
	"unix:$T/s4/run-qmp.sock,server=on,wait=off"; do
	grep -qxF -- "$needle" <<<"$args" && ok "QEMU got $needle" || bad "QEMU args lack $needle: $args"
done
[ "$(tail -n 3 <<<"$args" | tr '\n' ' ')" = "-nographic -kernel /boot/bzImage " ] &&
	ok "user's QEMU arguments last, verbatim" || bad "user's QEMU arguments: $args"
grep -q '"device":"sim:nvme,size=256M,dart=apple"' "$T/qemu.status" &&
	ok "broker was serving (DART mode) while QEMU ran" || bad "no broker status from inside QEMU: $(cat "$T/qemu.status")"
broker_pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$T/qemu.status")
[ -n "$broker_pid" ] && ! kill -0 "$broker_pid" 2>/dev/null && ok "broker stopped after QEMU exited" ||
	bad "broker $broker_pid still running"
[ ! -e "$T/s4/vfa0/control.sock" ] && [ ! -e "$T/s4/run.sock" ] && ok "broker and run removed their sockets" ||
	bad "sockets left in $T/s4"

# attach/detach/status through run.sock while the fake QEMU runs.
OUT=$(FAKE_REQUESTS=1 PATH="$T/bin:$PATH" "${WRAP[@]}" "$VFA" run -s "$T/s4" -- -nographic 2>&1)
rc=$?
[ $rc = 0 ] && ok "run with requests exits with QEMU's 0" || bad "run with requests: exit $rc: $OUT"
grep -q "no device vfa9 in this VM" "$T/req.detach" && grep -q "rc=1" "$T/req.detach" &&
	ok "detach of an unknown id refused" || bad "detach vfa9: $(cat "$T/req.detach")"
grep -q "QEMU refused the device" "$T/req.attach" && grep -q "rc=1" "$T/req.attach" &&
	ok "attach refused when QEMU cannot take it (no QMP)" || bad "attach: $(cat "$T/req.attach")"
grep -q "vfa0 is attached, not removed" "$T/req.again" && grep -q "rc=1" "$T/req.again" &&
	ok "attach of an attached id refused" || bad "attach vfa0: $(cat "$T/req.again")"
grep -q '"id":"vfa0"' "$T/req.status" && ! grep -q '"id":"vfa1"' "$T/req.status" &&
	ok "a refused attach left no device behind (its broker stopped)" || bad "status after refusals: $(cat "$T/req.status")"
! pgrep -f "serve .*$T/s4/vfa1" >/dev/null && ok "no broker left for the refused attach" || bad "vfa1's broker still runs"
OUT=$(FAKE_MSIX=1 PATH="$T/bin:$PATH" "${WRAP[@]}" "$VFA" run -s "$T/s4" -d sim:nvme,size=16M,msi=off -- -nographic 2>&1)
grep -q "vfa0 offers the guest MSI-X only, and QEMU 11.1's vfio-user-pci aborts" "$T/req.msix" && grep -q "rc=1" "$T/req.msix" &&
	ok "detach refused for an MSI-X-only function on QEMU 11.1" || bad "detach of MSI-X only: $(cat "$T/req.msix")"
run_cli "attach without a run" 1 "no \`vfio-apple run\` is running with sockets in $T/none" attach -s "$T/none" sim:nvme
one_line "attach without a run"
run_cli "detach without an id" 2 "detach takes one device ID" detach -s "$T/none"
run_cli "attach a bad device string" 2 "unknown simulated device 'disk'" attach -s "$T/none" sim:disk
run_cli "sim without a verb" 2 "sim needs vanish, replug or reset-companion" sim -s "$T/none"
run_cli "sim vanish without a run" 1 "no \`vfio-apple run\` is running" sim vanish -s "$T/none" vfa0

OUT=$(FAKE_RC=3 PATH="$T/bin:$PATH" "${WRAP[@]}" "$VFA" run -s "$T/s4" -- -nographic 2>&1)
rc=$?
[ $rc = 3 ] && ok "run passes QEMU's exit code on" || bad "run with QEMU exit 3: exit $rc: $OUT"

# Ctrl-C (SIGINT to run): QEMU and the broker both stopped, exit 130.
rm -f "$T/qemu.pid" "$T/qemu.status"
FAKE_SLEEP=30 PATH="$T/bin:$PATH" "$VFA" run -s "$T/s4" -- -nographic >"$T/run-int.log" 2>&1 &
run_pid=$!
pids+=("$run_pid")
if wait_for 15 test -s "$T/qemu.status"; then
	qemu_pid=$(cat "$T/qemu.pid")
	broker_pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$T/qemu.status")
	kill -INT "$run_pid"
	wait "$run_pid"
	rc=$?
	[ $rc = 130 ] && ok "run exits 130 on SIGINT" || bad "run exit $rc on SIGINT: $(cat "$T/run-int.log")"
	! kill -0 "$qemu_pid" 2>/dev/null && ok "QEMU stopped on SIGINT" || bad "QEMU $qemu_pid survived SIGINT"
	[ -n "$broker_pid" ] && ! kill -0 "$broker_pid" 2>/dev/null && ok "broker stopped on SIGINT" ||
		bad "broker '$broker_pid' survived SIGINT"
	[ ! -e "$T/s4/vfa0/control.sock" ] && ok "no sockets left after SIGINT" || bad "sockets left after SIGINT"
else
	bad "fake QEMU never ran: $(cat "$T/run-int.log")"
fi

# SIGTERM likewise (exit 143)
rm -f "$T/qemu.pid" "$T/qemu.status"
FAKE_SLEEP=30 PATH="$T/bin:$PATH" "$VFA" run -s "$T/s4" -- -nographic >"$T/run-term.log" 2>&1 &
run_pid=$!
pids+=("$run_pid")
if wait_for 15 test -s "$T/qemu.status"; then
	qemu_pid=$(cat "$T/qemu.pid")
	kill -TERM "$run_pid"
	wait "$run_pid"
	rc=$?
	[ $rc = 143 ] && ok "run exits 143 on SIGTERM" || bad "run exit $rc on SIGTERM"
	! kill -0 "$qemu_pid" 2>/dev/null && ok "QEMU stopped on SIGTERM" || bad "QEMU survived SIGTERM"
else
	bad "fake QEMU never ran (SIGTERM case): $(cat "$T/run-term.log")"
fi

# ---- run --in-process: a QEMU with vfio-apple-pci, no broker -----------------
# Without one anywhere: one line naming what each candidate lacked and docs/qemu.md.
OUT=$(PATH="$T/old:/usr/bin:/bin" QEMU_BIN= "${WRAP[@]}" "$VFA" run --in-process -s "$T/s6" -- -nographic 2>&1)
rc=$?
[ $rc = 1 ] && [[ $OUT == *"no QEMU with vfio-apple-pci"* ]] && [[ $OUT == *"QEMU 7.2.0 at $T/old/qemu-system-x86_64 has no vfio-apple-pci"* ]] &&
	[[ $OUT == *"docs/qemu.md"* ]] && ok "run --in-process without such a QEMU says what is missing" ||
	bad "run --in-process, no QEMU: exit $rc: $OUT"
one_line "run --in-process, no QEMU"
run_cli "run --in-process --qemu without the devices" 1 "has no vfio-apple-pci (from --qemu)" \
	run --in-process --qemu "$T/old/qemu-system-x86_64" -s "$T/s6" -- -x
# A fake in-process QEMU: answers -device help with the device, records its
# arguments and what is in the socket directory while it runs.
mkdir -p "$T/inproc"
cat >"$T/inproc/qemu-system-x86_64" <<EOF
#!/bin/bash
if [ "\$1" = --version ]; then echo "QEMU emulator version 10.2.0"; exit 0; fi
if [ "\$1" = -device ] && [ "\$2" = help ]; then echo 'name "vfio-apple-pci", bus PCI'; exit 0; fi
printf '%s\n' "\$@" >"$T/inproc.args"
ls "$T/s6" >"$T/inproc.ls" 2>&1
exit \${FAKE_RC:-0}
EOF
chmod +x "$T/inproc/qemu-system-x86_64"
OUT=$(QEMU_BIN="$T/inproc/qemu-system-x86_64" "${WRAP[@]}" "$VFA" run --in-process -d sim:nvme,size=64M -m 512M -s "$T/s6" -- -nographic -m 1G 2>&1)
rc=$?
[ $rc = 0 ] && ok "run --in-process exits with QEMU's 0" || bad "run --in-process: exit $rc: $OUT"
[[ $OUT == *"in-process QEMU 10.2.0 ($T/inproc/qemu-system-x86_64); counters: vfio-apple status -s $T/s6"* ]] &&
	ok "run --in-process names the QEMU and the QMP socket" || bad "run --in-process output: $OUT"
args=$(tr '\n' ' ' <"$T/inproc.args" 2>/dev/null)
[ "$args" = "-machine q35 -m 512M -device pcie-root-port,id=vfa-port0,bus=pcie.0,addr=0x2.0x0,chassis=64,port=0x40,multifunction=on -device pcie-root-port,id=vfa-port1,bus=pcie.0,addr=0x2.0x1,chassis=65,port=0x41 -device pcie-root-port,id=vfa-port2,bus=pcie.0,addr=0x2.0x2,chassis=66,port=0x42 -device pcie-root-port,id=vfa-port3,bus=pcie.0,addr=0x2.0x3,chassis=67,port=0x43 -device {\"driver\":\"vfio-apple-pci\",\"id\":\"vfa0\",\"bus\":\"vfa-port0\",\"addr\":\"0.1\",\"host\":\"sim:nvme,size=64M\",\"companion\":false} -device {\"driver\":\"apple-dma-pci\",\"id\":\"vfa0-dma\",\"bus\":\"vfa-port0\",\"addr\":\"0.0\",\"multifunction\":true} -qmp unix:$T/s6/run-qmp.sock,server=on,wait=off -qmp unix:$T/s6/qmp.sock,server=on,wait=off -nographic -m 1G " ] &&
	ok "in-process QEMU arguments (slots, devices, QMP, user's -m allowed)" || bad "in-process QEMU arguments: $args"
! grep -q 'control.sock\|vfa0' "$T/inproc.ls" && ok "no broker sockets in-process" || bad "in-process run made broker sockets: $(cat "$T/inproc.ls")"
OUT=$(FAKE_RC=4 QEMU_BIN="$T/inproc/qemu-system-x86_64" "${WRAP[@]}" "$VFA" run --in-process -s "$T/s6" -- -x 2>&1)
rc=$?
[ $rc = 4 ] && ok "run --in-process passes QEMU's exit code on" || bad "run --in-process with QEMU exit 4: exit $rc: $OUT"
# --vfio-user after --in-process: the last one wins (the broker's checks apply)
run_cli "run --vfio-user refuses -m again" 2 "refusing QEMU option -m" run --in-process --vfio-user -s "$T/s6" -- -m 2G

# ---- status --qmp -------------------------------------------------------------
run_cli "status --qmp without QEMU" 1 "no QEMU answers on the QMP socket $T/none/qmp.sock" status --qmp "$T/none/qmp.sock"
one_line "status --qmp without QEMU"
run_cli "status --qom-path alone" 2 "--qom-path needs --qmp PATH" status --qom-path /machine/peripheral/vfa0

# ---- run: the demo needs root -------------------------------------------------
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 755 "$T"
	OUT=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$VFA" run -s "$T/s5" 2>&1)
	rc=$?
	[ $rc = 1 ] && [[ $OUT == *"the demo needs root: provisioning"* ]] && ok "demo as a user: needs root" ||
		bad "demo as a user: exit $rc: $OUT"
fi
run_cli "demo bad kernel" 2 "bad --kernel '5.10'" run --kernel 5.10 -s "$T/s5"

# ---- the man page: renders cleanly and documents every option ---------------
if [ -n "$MAN" ]; then
	if command -v groff >/dev/null; then
		warnings=$(groff -man -Tutf8 -ww -z "$MAN" 2>&1)
		[ -z "$warnings" ] && ok "man page renders without warnings" || bad "man page: $warnings"
	fi
	man_text=$(tr -d '\\' <"$MAN")
	for cmd in serve run list status attach sim; do
		for opt in $("$VFA" "$cmd" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
			[[ $man_text == *"$opt"* ]] && ok "man page documents $cmd $opt" || bad "man page lacks $cmd $opt"
		done
	done
fi

echo "cli commands: $passed passed, $failed failed"
[ "$failed" = 0 ]
