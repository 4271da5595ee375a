# Global external Application Load Balancer (load_balancing_scheme EXTERNAL_MANAGED) with a
# Google-managed certificate; http:// is redirected to https://.

locals {
  # ROULETTE_GRACE_PERIOD: how long a stopping node waits for its clients to close.
  grace_period = 10
  # On this load balancer the backend service timeout is the longest a WebSocket may live,
  # idle or not (default 30 s would cut every chat after 30 s). One day; clients reconnect
  # after it. It also bounds ordinary requests, which answer at once here.
  websocket_max_lifetime = 86400
}

# hashicorp/google 7.45.0: website/docs/r/compute_global_address.html.markdown — name
resource "google_compute_global_address" "lb" {
  name = var.name
}

# hashicorp/google 7.45.0: website/docs/r/compute_health_check.html.markdown —
# check_interval_sec, timeout_sec, healthy_threshold, unhealthy_threshold,
# http_health_check { port, request_path }, log_config { enable }
resource "google_compute_health_check" "healthz" {
  name                = "${var.name}-healthz"
  check_interval_sec  = 5
  timeout_sec         = 3
  healthy_threshold   = 2
  unhealthy_threshold = 2
  http_health_check {
    port         = 8080
    request_path = "/healthz"
  }
  log_config {
    enable = false
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_backend_service.html.markdown —
# load_balancing_scheme, protocol, port_name, timeout_sec, connection_draining_timeout_sec,
# health_checks, backend { group, balancing_mode, capacity_scaler }, log_config
resource "google_compute_backend_service" "nodes" {
  name                  = var.name
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTP"
  port_name             = "http"
  # Maximum lifetime of a WebSocket through this load balancer (see the local above).
  timeout_sec = local.websocket_max_lifetime
  # A node removed from the backend keeps its connections this long. The server closes every
  # client with 1001 within its grace period once it is told to stop; a few seconds more.
  connection_draining_timeout_sec = local.grace_period + 5
  health_checks                   = [google_compute_health_check.healthz.id]
  dynamic "backend" {
    for_each = google_compute_instance_group.nodes
    content {
      group           = backend.value.id
      balancing_mode  = "UTILIZATION"
      capacity_scaler = 1
    }
  }
  log_config {
    enable      = true
    sample_rate = 0.1
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_url_map.html.markdown — default_service
resource "google_compute_url_map" "https" {
  name            = var.name
  default_service = google_compute_backend_service.nodes.id
}

# hashicorp/google 7.45.0: website/docs/r/compute_managed_ssl_certificate.html.markdown —
# managed { domains }. Provisioning starts once the domain's A record points at the address.
resource "google_compute_managed_ssl_certificate" "main" {
  name = var.name
  managed {
    domains = [var.domain]
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_ssl_policy.html.markdown — profile, min_tls_version
resource "google_compute_ssl_policy" "modern" {
  name            = var.name
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

# hashicorp/google 7.45.0: website/docs/r/compute_target_https_proxy.html.markdown — url_map,
# ssl_certificates, ssl_policy, http_keep_alive_timeout_sec (idle HTTP keep-alive only, not
# WebSockets; left at its default, 610 s)
resource "google_compute_target_https_proxy" "main" {
  name             = var.name
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.main.id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

# hashicorp/google 7.45.0: website/docs/r/compute_global_forwarding_rule.html.markdown —
# target, ip_address, port_range, load_balancing_scheme, ip_protocol
resource "google_compute_global_forwarding_rule" "https" {
  name                  = "${var.name}-https"
  target                = google_compute_target_https_proxy.main.id
  ip_address            = google_compute_global_address.lb.id
  port_range            = "443"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# http:// -> https:// (301).
# hashicorp/google 7.45.0: website/docs/r/compute_url_map.html.markdown — default_url_redirect
# { https_redirect, redirect_response_code, strip_query }
resource "google_compute_url_map" "redirect" {
  name = "${var.name}-redirect"
  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

# hashicorp/google 7.45.0: website/docs/r/compute_target_http_proxy.html.markdown — url_map
resource "google_compute_target_http_proxy" "redirect" {
  name    = "${var.name}-redirect"
  url_map = google_compute_url_map.redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "${var.name}-http"
  target                = google_compute_target_http_proxy.redirect.id
  ip_address            = google_compute_global_address.lb.id
  port_range            = "80"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# hashicorp/google 7.45.0: website/docs/d/dns_managed_zone.html.markdown — name (dns_name)
data "google_dns_managed_zone" "main" {
  count = var.dns_managed_zone == null ? 0 : 1
  name  = var.dns_managed_zone
}

# hashicorp/google 7.45.0: website/docs/r/dns_record_set.html.markdown — managed_zone, name,
# type, ttl, rrdatas
resource "google_dns_record_set" "domain" {
  count        = var.dns_managed_zone == null ? 0 : 1
  managed_zone = data.google_dns_managed_zone.main[0].name
  name         = "${var.domain}."
  type         = "A"
  ttl          = 300
  rrdatas      = [google_compute_global_address.lb.address]
}
