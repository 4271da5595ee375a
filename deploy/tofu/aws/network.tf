# Network and firewall.
#
# One VPC with two public subnets in two availability zones (an ALB needs subnets in at least two).
# The nodes get a public IPv4 address only for their way out (apt, the release download): their
# security group admits nothing from the internet. A NAT gateway would remove those addresses at
# ~33 USD/month plus traffic; see docs/deploy/aws.md.
#
# Who may reach what:
#   internet      -> ALB 80, 443
#   ALB           -> nodes 8080 (roulette)
#   VPC (private) -> nodes 9898 (metrics, Prometheus inside the VPC)
#   admin_cidr    -> nodes 22 (only if set)
#   nodes         -> Redis 6379 (cluster mode); nodes -> internet 80, 443 (packages, release)

locals {
  vpc_cidr     = "10.20.0.0/16"
  subnet_cidrs = [cidrsubnet(local.vpc_cidr, 8, 0), cidrsubnet(local.vpc_cidr, 8, 1)]
  # Fixed private addresses, so that cloud.env can name the metrics address before boot and the
  # Prometheus targets are known: node i sits in subnet i % 2 at host 10 + i / 2.
  node_ips = [for i in range(var.node_count) : cidrhost(local.subnet_cidrs[i % 2], 10 + floor(i / 2))]
}

# hashicorp/aws 5.45.0: website/docs/d/availability_zones.html.markdown — state, filter
# Zones a and b by name: a closed set, so the subnets never move when AWS adds a zone.
data "aws_availability_zones" "available" {
  state = "available"
  filter {
    name   = "zone-name"
    values = ["${var.region}a", "${var.region}b"]
  }
}

# hashicorp/aws 5.45.0: website/docs/r/vpc.html.markdown — cidr_block, enable_dns_hostnames
resource "aws_vpc" "main" {
  #checkov:skip=CKV2_AWS_11:VPC flow logs need a log group or bucket and cost per GB; enable them in the account's logging setup if required
  cidr_block           = local.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

# hashicorp/aws 5.45.0: website/docs/r/default_security_group.html.markdown — no ingress/egress
# blocks = every rule removed from the VPC's default group, so nothing lands in it by accident.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id
}

# hashicorp/aws 5.45.0: website/docs/r/internet_gateway.html.markdown — vpc_id
resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = var.name }
}

# hashicorp/aws 5.45.0: website/docs/r/subnet.html.markdown — availability_zone, cidr_block,
# map_public_ip_on_launch (left false: the instances ask for their address themselves)
resource "aws_subnet" "public" {
  count             = 2
  vpc_id            = aws_vpc.main.id
  availability_zone = data.aws_availability_zones.available.names[count.index]
  cidr_block        = local.subnet_cidrs[count.index]
  tags              = { Name = "${var.name}-${count.index}" }
}

# hashicorp/aws 5.45.0: website/docs/r/route_table.html.markdown — route { cidr_block, gateway_id }
resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
  tags = { Name = var.name }
}

# hashicorp/aws 5.45.0: website/docs/r/route_table_association.html.markdown — subnet_id, route_table_id
resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# --- security groups ----------------------------------------------------------------------
# hashicorp/aws 5.45.0: website/docs/r/security_group.html.markdown — name, description, vpc_id
# (rules as separate aws_vpc_security_group_*_rule resources, as that page recommends)
resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "roulette ALB: 80/443 from anywhere, 8080 to the nodes"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "node" {
  name        = "${var.name}-node"
  description = "roulette nodes: 8080 from the ALB, 9898 from the VPC"
  vpc_id      = aws_vpc.main.id
}

# hashicorp/aws 5.45.0: website/docs/r/vpc_security_group_ingress_rule.html.markdown —
# security_group_id, ip_protocol, from_port, to_port, cidr_ipv4, referenced_security_group_id
resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  #checkov:skip=CKV_AWS_260:the public entry point of the service; the listener on port 80 only redirects to HTTPS
  for_each          = toset(["80", "443"])
  security_group_id = aws_security_group.alb.id
  description       = "clients (${each.key == "80" ? "redirected to https" : "wss:// and https://"})"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.key)
  to_port           = tonumber(each.key)
  cidr_ipv4         = "0.0.0.0/0"
}

# hashicorp/aws 5.45.0: website/docs/r/vpc_security_group_egress_rule.html.markdown — same arguments
resource "aws_vpc_security_group_egress_rule" "alb_to_nodes" {
  security_group_id            = aws_security_group.alb.id
  description                  = "proxied connections and health checks to roulette"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "node_from_alb" {
  security_group_id            = aws_security_group.node.id
  description                  = "roulette (WebSocket, page, /healthz) from the ALB only"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_metrics" {
  security_group_id = aws_security_group.node.id
  description       = "Prometheus metrics from inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 9898
  to_port           = 9898
  cidr_ipv4         = local.vpc_cidr
}

resource "aws_vpc_security_group_ingress_rule" "node_ssh" {
  count             = var.admin_cidr == null ? 0 : 1
  security_group_id = aws_security_group.node.id
  description       = "SSH from the operator's address"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.admin_cidr
}

# Out of the nodes: HTTP(S) only (Debian mirrors, the release .deb). The VPC's DNS resolver and
# the time service at 169.254.169.123 are not filtered by security groups.
resource "aws_vpc_security_group_egress_rule" "node_web" {
  for_each          = toset(["80", "443"])
  security_group_id = aws_security_group.node.id
  description       = "packages and the release download"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.key)
  to_port           = tonumber(each.key)
  cidr_ipv4         = "0.0.0.0/0"
}
