output "cloud_config" {
  description = "A #cloud-config document writing cloud.env, the Redis secret files and the credentials drop-in."
  value       = "#cloud-config\n${yamlencode({ write_files = local.files })}"
  sensitive   = true
}

output "cloud_env" {
  description = "The content of /etc/roulette/cloud.env."
  value       = local.cloud_env
}

output "credentials_dropin" {
  description = "The unit drop-in for LoadCredential=, or an empty string without Redis secrets."
  value       = local.cluster && (var.cluster_password != null || var.cluster_ca_pem != null) ? local.dropin : ""
}
