/* SPDX-License-Identifier: MIT */
/* "sim-dext:": the darwin backend over the dext TEST MODEL over a simulated NVMe. */
#ifndef VFA_DEXT_MODEL_SIM_H
#define VFA_DEXT_MODEL_SIM_H

#include <stddef.h>

#include "host_device.h"
#include "sim_nvme.h"

/*
 * Open a simulated NVMe (cfg as for "sim:nvme"), publish it as a dext
 * service under a host root of its own, and open it with the darwin backend
 * (darwin_open), exactly as on a Mac.  The service and the simulated device
 * go away with the returned host_device.  NULL with a reason in err.
 */
struct host_device *dext_model_open_sim(const struct sim_nvme_config *cfg, char *err, size_t errlen);

#endif
