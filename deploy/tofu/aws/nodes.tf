# The roulette VMs: Debian 12 booted from deploy/cloud-init.yaml (release URL and SHA-256 filled
# in) plus a second cloud-config part with this node's /etc/roulette/cloud.env and, in cluster
# mode, the Redis secret files (deploy/tofu/modules/node-config).
#
# Upgrades are per node: changing release_url/release_sha256 changes no running VM (user data
# and AMI are ignored after creation); `tofu apply -replace='aws_instance.node[0]'` rebuilds one
# node with the new release. docs/deploy/aws.md has the whole procedure.

locals {
  base_user_data = replace(replace(file("${path.module}/../../cloud-init.yaml"),
  "@RELEASE_URL@", var.release_url), "@RELEASE_SHA256@", var.release_sha256)
  # cloud-init's default merge replaces a list that a later part repeats (write_files): append.
  merge_type = "list(append)+dict(no_replace,recurse_list)+str()"
}

# hashicorp/aws 5.45.0: website/docs/d/ami.html.markdown — owners, most_recent, filter
# 136693071363 is the Debian project's AWS account (wiki.debian.org/Cloud/AmazonEC2Image).
data "aws_ami" "debian" {
  owners      = ["136693071363"]
  most_recent = true
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

# hashicorp/aws 5.45.0: website/docs/r/key_pair.html.markdown — key_name, public_key
resource "aws_key_pair" "admin" {
  key_name   = "${var.name}-admin"
  public_key = var.ssh_public_key
}

module "node_config" {
  source           = "../modules/node-config"
  count            = var.node_count
  node_name        = "${var.name}-${count.index + 1}"
  metrics_address  = local.node_ips[count.index]
  trusted_proxies  = [local.vpc_cidr]
  proxy_header     = "x-forwarded-for"
  allowed_origin   = "https://${var.domain}"
  grace_period     = local.grace_period
  cluster_url      = local.cluster ? "rediss://${aws_elasticache_replication_group.redis[0].primary_endpoint_address}:6379" : null
  cluster_password = local.cluster ? random_password.redis[0].result : null
}

# hashicorp/cloudinit 2.4.0: docs/data-sources/config.md — gzip, base64_encode, part {
# content_type, filename, merge_type, content }
data "cloudinit_config" "node" {
  count         = var.node_count
  gzip          = true
  base64_encode = true
  part {
    filename     = "roulette.yaml"
    content_type = "text/cloud-config"
    content      = local.base_user_data
  }
  part {
    filename     = "roulette-node.yaml"
    content_type = "text/cloud-config"
    merge_type   = local.merge_type
    content      = module.node_config[count.index].cloud_config
  }
}

# hashicorp/aws 5.45.0: website/docs/r/instance.html.markdown — ami, instance_type, subnet_id,
# private_ip, associate_public_ip_address, vpc_security_group_ids, key_name, user_data_base64
# (gzip needs it), ebs_optimized, metadata_options, root_block_device
resource "aws_instance" "node" {
  #checkov:skip=CKV2_AWS_41:the node calls no AWS API, so it gets no IAM role
  #checkov:skip=CKV_AWS_126:detailed (1-minute) CloudWatch monitoring costs extra; the node exports Prometheus metrics on 9898
  #checkov:skip=CKV_AWS_88:the public address is for outgoing traffic (packages, release); the security group admits nothing from the internet but SSH from admin_cidr
  count                       = var.node_count
  ami                         = data.aws_ami.debian.id
  instance_type               = var.instance_type
  subnet_id                   = aws_subnet.public[count.index % 2].id
  private_ip                  = local.node_ips[count.index]
  associate_public_ip_address = true
  vpc_security_group_ids      = [aws_security_group.node.id]
  key_name                    = aws_key_pair.admin.key_name
  user_data_base64            = data.cloudinit_config.node[count.index].rendered
  ebs_optimized               = true
  # IMDSv2 only, one hop: user data (it holds the Redis password in cluster mode) is not
  # readable with a plain GET or from a container on the node.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  root_block_device {
    volume_type = "gp3"
    volume_size = 8
    encrypted   = true
  }
  tags = { Name = "${var.name}-${count.index + 1}" }
  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}
