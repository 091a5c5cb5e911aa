// SPDX-License-Identifier: MIT
/* The simulated demo of `vfio-apple run` (being written). */
#include "run.h"

int run_demo(struct run_plan *plan, const char *qemu_path)
{
	(void)plan;
	(void)qemu_path;
	cli_error("the demo is not in this build yet: give QEMU arguments after -- (see `vfio-apple run --help`)");
	return 1;
}
