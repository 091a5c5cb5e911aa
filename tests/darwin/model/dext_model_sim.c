// SPDX-License-Identifier: MIT
#include "dext_model_sim.h"

#include <stdatomic.h>
#include <stdio.h>

#include "darwin_backend.h"
#include "dext_model.h"

struct host_device *dext_model_open_sim(const struct sim_nvme_config *cfg, char *err, size_t errlen)
{
	static atomic_uint next_root;
	struct dext_model_service_config svc = {0};
	struct host_device *sim, *hd;
	struct hd_identity id;
	char root[32], spec[64];
	uint64_t service_id;

	if (cfg->dart.identity) {
		snprintf(err, errlen, "sim-dext: the dext always translates through the DART; dart=identity is "
				      "only available with sim:");
		return NULL;
	}
	sim = sim_nvme_open(cfg, err, errlen);
	if (!sim)
		return NULL;
	if (sim->ops->identity(sim, &id)) {
		snprintf(err, errlen, "sim-dext: identity: %s", host_device_error(sim));
		sim->ops->destroy(sim);
		return NULL;
	}
	/* A host root per device: several sim-dext devices never collide. */
	snprintf(root, sizeof(root), "sim-dext-root%u", atomic_fetch_add(&next_root, 1));
	svc.dev = sim;
	svc.owns_dev = true;
	svc.host_root = root;
	if (dext_model_publish(&svc, &service_id, err, errlen)) {
		sim->ops->destroy(sim);
		return NULL;
	}
	snprintf(spec, sizeof(spec), "%02x:%02x.%x@%s", id.bus, id.device, id.function, root);
	hd = darwin_open(spec, err, errlen);
	/* Out of matching from now on; it lives as long as the connection. */
	dext_model_unpublish(service_id, false);
	return hd;
}
