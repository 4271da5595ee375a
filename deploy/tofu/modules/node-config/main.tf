# Per-node settings of a roulette VM: /etc/roulette/cloud.env (0600 root:root; the unit reads it
# after /etc/roulette/roulette.env, which stays the operator's file) and, in cluster mode, the
# Redis secret files plus a unit drop-in that hands them to the service as systemd credentials.
#
# The output `cloud_config` is a second cloud-config part, merged by cloud-init with
# deploy/cloud-init.yaml (the caller sets the part's X-Merge-Type so that write_files lists are
# appended, not replaced). `cloud_env`, `cluster_password` and `cluster_ca_pem` are the same
# content for hosts without cloud-init (Google's Debian images: deploy/tofu/gcp/startup.sh).
#
# No provider and no resource here: plain expressions, so every cloud folder can use it.

locals {
  cluster = var.cluster_url != null

  env = merge(
    {
      ROULETTE_NODE_NAME      = var.node_name
      ROULETTE_METRICS_LISTEN = "${var.metrics_address}:9898"
      ROULETTE_TRUSTED_PROXY  = join(",", var.trusted_proxies)
      ROULETTE_PROXY_HEADER   = var.proxy_header
      ROULETTE_ALLOWED_ORIGIN = var.allowed_origin
      ROULETTE_GRACE_PERIOD   = tostring(var.grace_period)
    },
    local.cluster ? { ROULETTE_CLUSTER = var.cluster_url } : {},
  )

  cloud_env = join("", concat(
    [
      "# /etc/roulette/cloud.env: written at first boot by the cloud provisioning (OpenTofu,\n",
      "# deploy/tofu/). Read by roulette.service after /etc/roulette/roulette.env; a value here\n",
      "# wins. Replace the VM (or re-run its provisioning) to change it.\n",
    ],
    [for k in sort(keys(local.env)) : "${k}=${local.env[k]}\n"],
  ))

  # systemd hands the secrets to the service as credentials ($CREDENTIALS_DIRECTORY, %d):
  # the files stay 0600 root:root, and the service user reads its private copies.
  dropin = join("", concat(
    [
      "# Written by the cloud provisioning (deploy/tofu/): Redis secrets as systemd credentials.\n",
      "[Service]\n",
    ],
    var.cluster_password != null ? [
      "LoadCredential=cluster-password:/etc/roulette/cluster-password\n",
      "Environment=ROULETTE_CLUSTER_PASSWORD_FILE=%d/cluster-password\n",
    ] : [],
    var.cluster_ca_pem != null ? [
      "LoadCredential=cluster-ca:/etc/roulette/cluster-ca.pem\n",
      "Environment=ROULETTE_CLUSTER_CA_FILE=%d/cluster-ca\n",
    ] : [],
  ))

  files = concat(
    [{ path = "/etc/roulette/cloud.env", owner = "root:root", permissions = "0600", content = local.cloud_env }],
    var.cluster_password != null ? [{
      path = "/etc/roulette/cluster-password", owner = "root:root", permissions = "0600", content = var.cluster_password
    }] : [],
    var.cluster_ca_pem != null ? [{
      path = "/etc/roulette/cluster-ca.pem", owner = "root:root", permissions = "0600", content = var.cluster_ca_pem
    }] : [],
    local.cluster && (var.cluster_password != null || var.cluster_ca_pem != null) ? [{
      path        = "/etc/systemd/system/roulette.service.d/50-cloud-credentials.conf"
      owner       = "root:root"
      permissions = "0644"
      content     = local.dropin
    }] : [],
  )
}
