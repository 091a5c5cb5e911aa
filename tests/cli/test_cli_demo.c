// SPDX-License-Identifier: MIT
/*
 * The demo's verdict (cli/demo.c): exit 0 only if everything was verified.
 * Fed with console lines and broker status objects as a real run sees them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "demo.h"

static const char fio_ok[] =
	"VFA-FIO-JSON {\"jobs\":[{\"jobname\":\"demo\",\"error\":0,"
	"\"read\":{\"io_kbytes\":32768,\"bw\":21913},\"write\":{\"io_kbytes\":32768,\"bw\":13721}}]}";

static const char status_ok[] =
	"{\"pid\":1,\"dma\":{\"peak_mappings\":6,\"peak_bytes\":11534336,\"max_mappings\":65536,"
	"\"max_bytes\":1610612736,\"faults\":%d},\"companion\":{\"doorbells\":%d,\"map_entries\":6}}";

static void feed(struct demo_result *r, const char *text)
{
	char line[4096];

	snprintf(line, sizeof(line), "%s", text);
	demo_console_line(r, line);
}

/* A run that went well, up to (not including) the broker's last status. */
static void good_console(struct demo_result *r)
{
	memset(r, 0, sizeof(*r));
	feed(r, "SeaBIOS (version 1.16)\r");
	feed(r, "VFA-RESULT init=start kernel=6.1.0-56-amd64 arch=x86_64\r");
	feed(r, "VFA-RESULT device=seen disk=nvme0n1 bytes=268435456 pci=0000:00:05.0");
	feed(r, "VFA-RESULT companion=0000:00:06.0");
	/* fio's progress may precede the marker on the same line */
	{
		char line[4096];

		snprintf(line, sizeof(line), "Jobs: 1 (f=1): [V(1)][100.0%%]%s", fio_ok);
		demo_console_line(r, line);
	}
	feed(r, "VFA-RESULT fio_rc=0");
	feed(r, "VFA-RESULT init=done rc=0");
}

static void set_status(struct demo_result *r, int faults, int doorbells)
{
	char text[512];

	snprintf(text, sizeof(text), status_ok, faults, doorbells);
	json_object_put(r->status);
	r->status = json_tokener_parse(text);
	assert_non_null(r->status);
	demo_keep_status(r, r->status);
}

static void release(struct demo_result *r)
{
	json_object_put(r->status);
	json_object_put(r->fio);
	r->status = r->fio = NULL;
}

static bool verdict(const struct demo_result *r, int broker_rc, char **text)
{
	size_t len = 0;
	FILE *f = open_memstream(text, &len);
	bool ok;

	assert_non_null(f);
	ok = demo_summarize(f, "sim:nvme,dart=apple", r, broker_rc);
	fclose(f);
	return ok;
}

static void expect_fail_text(const struct demo_result *r, const char *needle)
{
	char *text;

	assert_false(verdict(r, 0, &text));
	if (!strstr(text, needle))
		fail_msg("summary lacks '%s':\n%s", needle, text);
	free(text);
}

static void test_pass(void **state)
{
	struct demo_result r;
	char *text;

	(void)state;
	good_console(&r);
	assert_true(r.booted);
	assert_true(r.want_baseline);
	r.have_baseline = true; /* the launcher's query at init=start */
	r.boot_faults = 0;
	set_status(&r, 0, 7);
	assert_true(verdict(&r, 0, &text));
	assert_non_null(strstr(text, "guest Linux 6.1.0-56-amd64"));
	assert_non_null(strstr(text, "device seen    yes: nvme0n1 (256.0 MiB) at 0000:00:05.0, apple_dma bound to 0000:00:06.0"));
	assert_non_null(strstr(text, "I/O verified   yes: 32.0 MiB written"));
	assert_non_null(strstr(text, "write 13.4 MiB/s, verify-read 21.4 MiB/s"));
	assert_non_null(strstr(text, "doorbells      7 (6 map entries)"));
	assert_non_null(strstr(text, "DART peak      6 of 65536 mappings, 11.0 MiB of 1.5 GiB"));
	assert_non_null(strstr(text, "DART faults    0 while Linux ran\n"));
	assert_non_null(strstr(text, "demo: PASS"));
	free(text);
	release(&r);
}

/* In-process: the counters come over QMP (cli/qmp.c's shape), which has
 * no DART limits; the verdict is the same. */
static void test_pass_inprocess(void **state)
{
	struct demo_result r;
	char *text;

	(void)state;
	good_console(&r);
	r.have_baseline = true;
	r.status = json_tokener_parse("{\"source\":\"qmp\",\"dma\":{\"peak_mappings\":9,\"peak_bytes\":12582912,"
				      "\"faults\":0,\"live_mappings\":0},\"companion\":{\"doorbells\":11,"
				      "\"map_entries\":9},\"run_state\":\"shutdown\"}");
	assert_non_null(r.status);
	demo_keep_status(&r, r.status);
	assert_true(verdict(&r, 0, &text));
	assert_non_null(strstr(text, "doorbells      11 (9 map entries)"));
	assert_non_null(strstr(text, "DART peak      9 mappings, 12.0 MiB\n"));
	assert_non_null(strstr(text, "DART faults    0 while Linux ran\n"));
	assert_non_null(strstr(text, "demo: PASS"));
	free(text);
	/* a fault counted by the in-process device fails it as well */
	json_object_put(r.status);
	r.status = json_tokener_parse("{\"source\":\"qmp\",\"dma\":{\"peak_mappings\":9,\"peak_bytes\":12582912,"
				      "\"faults\":3},\"companion\":{\"doorbells\":11,\"map_entries\":9}}");
	demo_keep_status(&r, r.status);
	expect_fail_text(&r, "DART faults    3 while Linux ran");
	release(&r);
}

static void test_firmware_faults_apart(void **state)
{
	struct demo_result r;
	char *text;

	(void)state;
	good_console(&r);
	r.have_baseline = true;
	r.boot_faults = 1;
	set_status(&r, 1, 7);
	assert_true(verdict(&r, 0, &text));
	assert_non_null(strstr(text, "0 while Linux ran (1 before, from the firmware's NVMe probe"));
	free(text);
	/* one more fault once Linux ran: fail */
	set_status(&r, 2, 7);
	assert_false(verdict(&r, 0, &text));
	assert_non_null(strstr(text, "DART faults    1 while Linux ran"));
	assert_non_null(strstr(text, "demo: FAIL"));
	free(text);
	release(&r);
}

static void expect_fail(struct demo_result *r, int broker_rc, const char *needle)
{
	char *text;

	assert_false(verdict(r, broker_rc, &text));
	assert_non_null(strstr(text, "demo: FAIL"));
	if (needle && !strstr(text, needle))
		fail_msg("summary lacks '%s':\n%s", needle, text);
	free(text);
}

static void test_each_failure(void **state)
{
	struct demo_result r;

	(void)state;
	/* no doorbell: apple_dma did not map through the companion */
	good_console(&r);
	r.have_baseline = true;
	set_status(&r, 0, 0);
	expect_fail(&r, 0, "doorbells      0");
	release(&r);

	/* companion not bound */
	good_console(&r);
	feed(&r, "VFA-RESULT companion=none");
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, "apple_dma bound to NOTHING");
	release(&r);

	/* fio failed verification */
	good_console(&r);
	feed(&r, "VFA-RESULT fio_rc=1");
	feed(&r, "VFA-RESULT stage=fio error=rc1");
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, "guest failure  fio: rc1");
	release(&r);

	/* fio's report says an error even with exit 0 */
	good_console(&r);
	feed(&r, "VFA-FIO-JSON {\"jobs\":[{\"error\":84,\"read\":{\"io_kbytes\":32768,\"bw\":1},"
		 "\"write\":{\"io_kbytes\":32768,\"bw\":1}}]}");
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, "I/O verified   NO");
	release(&r);

	/* verification read back less than was written */
	good_console(&r);
	feed(&r, "VFA-FIO-JSON {\"jobs\":[{\"error\":0,\"read\":{\"io_kbytes\":100,\"bw\":1},"
		 "\"write\":{\"io_kbytes\":32768,\"bw\":1}}]}");
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, "I/O verified   NO");
	release(&r);

	/* no fio report at all */
	good_console(&r);
	json_object_put(r.fio);
	r.fio = NULL;
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, "fio exit 0, no report");
	release(&r);

	/* the workload script failed */
	good_console(&r);
	feed(&r, "VFA-RESULT init=done rc=1");
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 0, NULL);
	release(&r);

	/* the broker did not shut down cleanly */
	good_console(&r);
	r.have_baseline = true;
	set_status(&r, 0, 7);
	expect_fail(&r, 1, "broker         exit 1 on shutdown");
	release(&r);

	/* no status from the broker at all */
	good_console(&r);
	r.have_baseline = true;
	expect_fail(&r, 0, NULL);
	release(&r);

	/* never booted */
	memset(&r, 0, sizeof(r));
	expect_fail(&r, 0, "(did not boot)");
	expect_fail(&r, 0, "unknown: the guest never reached Linux");
	expect_fail(&r, 0, "device seen    NO");
}

static void test_keep_status_keeps_maxima(void **state)
{
	struct demo_result r;
	struct json_object *a = json_tokener_parse("{\"dma\":{\"peak_mappings\":9,\"peak_bytes\":100,\"faults\":2}}");
	struct json_object *b = json_tokener_parse("{\"dma\":{\"peak_mappings\":3,\"peak_bytes\":500,\"faults\":0}}");

	(void)state;
	memset(&r, 0, sizeof(r));
	demo_keep_status(&r, a);
	demo_keep_status(&r, b); /* a reset companion reports less: keep the maxima */
	demo_keep_status(&r, NULL);
	assert_int_equal(r.peak_mappings, 9);
	assert_int_equal(r.peak_bytes, 500);
	assert_int_equal(r.faults, 2);
	json_object_put(a);
	json_object_put(b);
}

static void test_env_value(void **state)
{
	static const char env[] = "VFA_CACHE=/var/cache/vfio-apple\nKREL_6_1=6.1.0-56-amd64\n"
				   "KERNEL_6_1=/k/vmlinuz\nKERNEL_6_12=/k12/vmlinuz\n";
	char value[64];

	(void)state;
	assert_true(demo_env_value(env, "KERNEL_6_1", value, sizeof(value)));
	assert_string_equal(value, "/k/vmlinuz");
	assert_true(demo_env_value(env, "KERNEL_6_12", value, sizeof(value)));
	assert_string_equal(value, "/k12/vmlinuz");
	assert_true(demo_env_value(env, "KREL_6_1", value, sizeof(value)));
	assert_string_equal(value, "6.1.0-56-amd64");
	assert_false(demo_env_value(env, "KERNEL_7_3", value, sizeof(value)));
	assert_false(demo_env_value(env, "KERNEL", value, sizeof(value)));
	assert_false(demo_env_value(env, "VFA_CACHE", value, 4)); /* does not fit */
	assert_false(demo_env_value("", "KREL_6_1", value, sizeof(value)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pass),
		cmocka_unit_test(test_pass_inprocess),
		cmocka_unit_test(test_firmware_faults_apart),
		cmocka_unit_test(test_each_failure),
		cmocka_unit_test(test_keep_status_keeps_maxima),
		cmocka_unit_test(test_env_value),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
