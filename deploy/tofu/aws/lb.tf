# Application Load Balancer, TLS with an ACM certificate validated through Route 53.
#
# ALB (HTTP-aware, L7) rather than an NLB with a TLS listener and proxy protocol v2: the ALB
# health-checks GET /healthz (a draining node answers 503 and leaves the rotation at once), adds
# X-Forwarded-For, redirects http:// to https://, and its idle timeout is configurable. An NLB
# has a fixed 350 s TCP idle timeout, keeps no HTTP view (health check per target only), and
# passes the client address as a PROXY v2 header (ROULETTE_PROXY_HEADER=proxy-protocol); it is
# cheaper per connection at very high counts. docs/deploy/aws.md weighs the two.

locals {
  # ROULETTE_GRACE_PERIOD: how long a stopping node waits for its clients to close.
  grace_period = 10
  # ALB idle timeout: above the server's --idle-ping (30 s: the server pings a silent client, and
  # the browser's pong is traffic on the wire) and above idle ping + pong timeout (60 s), so the
  # server, with a proper close code, and not the ALB, ends connections that went silent.
  # scripts/tofu-check.sh fails if this drops to or below the idle ping.
  alb_idle_timeout = 120
}

# hashicorp/aws 5.45.0: website/docs/d/route53_zone.html.markdown — name, private_zone
data "aws_route53_zone" "main" {
  name         = var.route53_zone_name
  private_zone = false
}

# hashicorp/aws 5.45.0: website/docs/r/acm_certificate.html.markdown — domain_name,
# validation_method = "DNS", lifecycle create_before_destroy (as the page recommends)
resource "aws_acm_certificate" "main" {
  domain_name       = var.domain
  validation_method = "DNS"
  lifecycle {
    create_before_destroy = true
  }
}

# hashicorp/aws 5.45.0: website/docs/r/acm_certificate_validation.html.markdown — the
# for_each over domain_validation_options shown on that page
resource "aws_route53_record" "cert_validation" {
  for_each = {
    for dvo in aws_acm_certificate.main.domain_validation_options : dvo.domain_name => {
      name   = dvo.resource_record_name
      record = dvo.resource_record_value
      type   = dvo.resource_record_type
    }
  }
  allow_overwrite = true
  name            = each.value.name
  records         = [each.value.record]
  ttl             = 60
  type            = each.value.type
  zone_id         = data.aws_route53_zone.main.zone_id
}

# hashicorp/aws 5.45.0: website/docs/r/acm_certificate_validation.html.markdown —
# certificate_arn, validation_record_fqdns (waits until ACM has issued the certificate)
resource "aws_acm_certificate_validation" "main" {
  certificate_arn         = aws_acm_certificate.main.arn
  validation_record_fqdns = [for r in aws_route53_record.cert_validation : r.fqdn]
}

# hashicorp/aws 5.45.0: website/docs/r/lb.html.markdown — load_balancer_type, idle_timeout,
# drop_invalid_header_fields, xff_header_processing_mode, enable_deletion_protection
resource "aws_lb" "main" {
  #checkov:skip=CKV_AWS_91:access logs need an S3 bucket with a bucket policy for the ELB account and cost per GB; add one if you need request logs
  #checkov:skip=CKV2_AWS_28:AWS WAF costs per rule and request; the server limits handshakes and connections per client address itself
  #checkov:skip=CKV_AWS_150:deletion protection would make `tofu destroy` fail; this is an example deployment, turn it on for production
  name               = var.name
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = aws_subnet.public[*].id
  # Seconds a connection may carry no data in either direction before the ALB closes it
  # (default 60). WebSocket frames, pings included, count as data.
  idle_timeout = local.alb_idle_timeout
  # Headers that are not valid HTTP are dropped instead of passed on.
  drop_invalid_header_fields = true
  # "append" (the default, written out): the ALB appends the address it saw the client connect
  # from, so the rightmost X-Forwarded-For entry is the client and the peer (inside the VPC) is
  # the ALB: ROULETTE_TRUSTED_PROXY = the VPC CIDR, ROULETTE_PROXY_HEADER = x-forwarded-for.
  xff_header_processing_mode = "append"
  enable_deletion_protection = false
}

# hashicorp/aws 5.45.0: website/docs/r/lb_target_group.html.markdown — port, protocol, vpc_id,
# deregistration_delay, health_check { path, matcher, interval, timeout, healthy_threshold,
# unhealthy_threshold }
resource "aws_lb_target_group" "nodes" {
  name     = var.name
  port     = 8080
  protocol = "HTTP"
  vpc_id   = aws_vpc.main.id
  # A deregistered node keeps its connections this long (default 300 s). The server itself
  # closes every client with 1001 within the grace period once it is told to stop, so a few
  # seconds above the grace period suffice; the ALB then cuts what is left.
  deregistration_delay = local.grace_period + 5
  health_check {
    path                = "/healthz"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 5
    timeout             = 3
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

# hashicorp/aws 5.45.0: website/docs/r/lb_target_group_attachment.html.markdown —
# target_group_arn, target_id, port
resource "aws_lb_target_group_attachment" "nodes" {
  count            = var.node_count
  target_group_arn = aws_lb_target_group.nodes.arn
  target_id        = aws_instance.node[count.index].id
  port             = 8080
}

# hashicorp/aws 5.45.0: website/docs/r/lb_listener.html.markdown — default_action { type =
# "redirect", redirect { port, protocol, status_code } }
resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

# hashicorp/aws 5.45.0: website/docs/r/lb_listener.html.markdown — protocol = "HTTPS",
# certificate_arn, ssl_policy, default_action { type = "forward", target_group_arn }
resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  # TLS 1.3 and 1.2 only (policy name from the ELB documentation "Security policies for your
  # Application Load Balancer").
  ssl_policy      = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn = aws_acm_certificate_validation.main.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.nodes.arn
  }
}

# hashicorp/aws 5.45.0: website/docs/r/route53_record.html.markdown — alias { name, zone_id,
# evaluate_target_health }
resource "aws_route53_record" "domain" {
  zone_id = data.aws_route53_zone.main.zone_id
  name    = var.domain
  type    = "A"
  alias {
    name                   = aws_lb.main.dns_name
    zone_id                = aws_lb.main.zone_id
    evaluate_target_health = true
  }
}
