"""LoadBalancer: the site's public entry point. An internet-facing ALB in the public subnets
terminates TLS 1.2+ with an ACM certificate, forwards to the api tasks, answers plain HTTP only
with a redirect, drops malformed headers, and writes access logs to a private, encrypted,
versioned bucket.

In front of it, an NLB with one Elastic IP per public subnet gives the site fixed addresses,
which an ALB never has: a multivalue edge answers the global name with them (an A record
cannot point at a name). The NLB passes TCP 443 through to the ALB's HTTPS listener, so TLS
still ends at the ALB with the site's certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from agent_app import contract
from infra.aws.network import HTTP_PORT, HTTPS_PORT
from infra.aws.site import AwsSite, deny_insecure_transport, policy_json
from infra.component import Capability
from infra.spec import DomainSpec

# TLS 1.3 with TLS 1.2 fallback, forward-secret ciphers only.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HSTS = "max-age=31536000; includeSubDomains"
LOG_PREFIX = "alb"
# Regions that predate August 2022 deliver ALB logs from a regional ELB account; newer ones
# from the log-delivery service principal (AWS: "Enable access logs for your ALB").
ELB_LOG_ACCOUNTS: dict[str, str] = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
    "us-west-2": "797873946194", "af-south-1": "098369216593", "ap-east-1": "754344448648",
    "ap-southeast-3": "589379963580", "ap-south-1": "718504428378", "ap-northeast-3": "383597477331",
    "ap-northeast-2": "600734575887", "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
    "ap-northeast-1": "582318560864", "ca-central-1": "985666609251", "eu-central-1": "054676820928",
    "eu-west-1": "156460612806", "eu-west-2": "652711504416", "eu-south-1": "635631232127",
    "eu-west-3": "009996457667", "eu-north-1": "897822967062", "me-south-1": "076674570225",
    "sa-east-1": "507241528517", "us-gov-west-1": "048591011584", "us-gov-east-1": "190560391635",
    "cn-north-1": "638102146993", "cn-northwest-1": "037604701340",
}  # fmt: skip
ELB_LOG_SERVICE = "logdelivery.elasticloadbalancing.amazonaws.com"


def elb_log_principal(site: AwsSite) -> dict[str, str]:
    account = ELB_LOG_ACCOUNTS.get(site.region)
    if account:
        return {"AWS": f"arn:{site.partition}:iam::{account}:root"}
    return {"Service": ELB_LOG_SERVICE}


@dataclass(frozen=True)
class LoadBalancerArgs:
    site: AwsSite
    domain: DomainSpec
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    nlb_security_group_id: pulumi.Input[str]
    deletion_protection: bool
    log_retention_days: int
    # The VPC's way to the internet (gateway, public routes): the load balancers wait for it.
    internet: Sequence[pulumi.Resource] = ()
    app_port: int = contract.DEFAULT_PORT


class LoadBalancer(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, domain = args.site, args.domain

        logs_policy = self._log_bucket(name, site, args)

        # The ALB: internet-facing, dual-stack, in the public subnets only.
        self.alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            ip_address_type="dualstack",
            subnets=list(args.subnet_ids),
            security_groups=[args.security_group_id],
            drop_invalid_header_fields=True,
            desync_mitigation_mode="strictest",
            enable_deletion_protection=args.deletion_protection,
            enable_http2=True,
            idle_timeout=60,
            access_logs={"bucket": self.log_bucket.id, "enabled": True, "prefix": LOG_PREFIX},
            tags=site.tagged("alb"),
            opts=self.child(depends_on=[logs_policy, *args.internet]),
        )
        # The api's target group: task IPs on the app port, healthy only when /readyz says so.
        self.target_group = aws.lb.TargetGroup(
            f"{name}-api",
            target_type="ip",
            port=args.app_port,
            protocol="HTTP",
            protocol_version="HTTP1",
            vpc_id=args.vpc_id,
            deregistration_delay=30,
            health_check={
                "enabled": True,
                "path": contract.READINESS_PATH,
                "protocol": "HTTP",
                "port": "traffic-port",
                "matcher": "200",
                "interval": 10,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=site.tagged("api"),
            opts=self.child(),
        )

        certificate_arn = domain.certificate_arn or self._certificate(name, site, domain)
        # HTTPS: TLS 1.2+ with the site certificate, HSTS on every response, forward to the api.
        self.https_listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.alb.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=certificate_arn,
            routing_http_response_strict_transport_security_header_value=HSTS,
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            tags=site.tagged("https"),
            opts=self.child(),
        )
        # HTTP: nothing is served; every request is redirected to HTTPS.
        self.http_listener = aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=self.alb.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=[
                {
                    "type": "redirect",
                    "redirect": {"protocol": "HTTPS", "port": str(HTTPS_PORT), "status_code": "HTTP_301"},
                }
            ],
            tags=site.tagged("http-redirect"),
            opts=self.child(),
        )
        self._static_front(name, site, args)
        if domain.zone_id:
            for record_type in ("A", "AAAA"):
                # The site's host name, an alias of the ALB (v4 and v6).
                aws.route53.Record(
                    f"{name}-{record_type.lower()}",
                    zone_id=domain.zone_id,
                    name=domain.name,
                    type=record_type,
                    aliases=[
                        {
                            "name": self.alb.dns_name,
                            "zone_id": self.alb.zone_id,
                            "evaluate_target_health": True,
                        }
                    ],
                    opts=self.child(),
                )

        self.endpoint = f"https://{domain.name}"
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "dnsName": self.alb.dns_name,
                "albArn": self.alb.arn,
                "targetGroupArn": self.target_group.arn,
                "nlbDnsName": self.nlb.dns_name,
                "addresses": self.addresses,
            }
        )

    def _static_front(self, name: str, site: AwsSite, args: LoadBalancerArgs) -> None:
        """The NLB with fixed addresses in front of the ALB (TCP 443 passed through)."""
        # One Elastic IP per public subnet: the site's addresses for as long as the NLB lives.
        eips = [
            aws.ec2.Eip(f"{name}-nlb-{i}", domain="vpc", tags=site.tagged(f"nlb-{i}"), opts=self.child())
            for i in range(len(args.subnet_ids))
        ]
        # The NLB: internet-facing, IPv4, one static address per zone, its own security group.
        self.nlb = aws.lb.LoadBalancer(
            f"{name}-nlb",
            load_balancer_type="network",
            internal=False,
            ip_address_type="ipv4",
            subnet_mappings=[
                {"subnet_id": subnet, "allocation_id": eip.allocation_id}
                for subnet, eip in zip(args.subnet_ids, eips, strict=True)
            ],
            security_groups=[args.nlb_security_group_id],
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=args.deletion_protection,
            tags=site.tagged("nlb"),
            opts=self.child(depends_on=list(args.internet)),
        )
        # Its one target: the ALB, checked on the app's readiness path through HTTPS.
        alb_target = aws.lb.TargetGroup(
            f"{name}-nlb-alb",
            target_type="alb",
            port=HTTPS_PORT,
            protocol="TCP",
            vpc_id=args.vpc_id,
            health_check={
                "enabled": True,
                "protocol": "HTTPS",
                "path": contract.READINESS_PATH,
                "port": "traffic-port",
                # Only protocol, path, port, interval and the healthy count are set; an ALB
                # target's other check settings keep AWS's defaults.
                "interval": 10,
                "healthy_threshold": 2,
            },
            tags=site.tagged("nlb-alb"),
            opts=self.child(),
        )
        # The ALB registers only once its HTTPS listener exists (AWS refuses it before).
        aws.lb.TargetGroupAttachment(
            f"{name}-nlb-alb",
            target_group_arn=alb_target.arn,
            target_id=self.alb.arn,
            port=HTTPS_PORT,
            opts=self.child(depends_on=[self.https_listener]),
        )
        # TCP 443 passed through: TLS ends at the ALB's HTTPS listener, never here.
        aws.lb.Listener(
            f"{name}-nlb-tls-passthrough",
            load_balancer_arn=self.nlb.arn,
            port=HTTPS_PORT,
            protocol="TCP",
            default_actions=[{"type": "forward", "target_group_arn": alb_target.arn}],
            tags=site.tagged("nlb-tls-passthrough"),
            opts=self.child(),
        )
        self.addresses: pulumi.Output[list[str]] = pulumi.Output.all(*[e.public_ip for e in eips])

    def _log_bucket(self, name: str, site: AwsSite, args: LoadBalancerArgs) -> aws.s3.BucketPolicy:
        """The access-log bucket, locked down; returns its policy (the ALB must wait for it)."""
        # Access-log bucket: named per account and region (bucket names are global).
        self.log_bucket = aws.s3.Bucket(
            f"{name}-logs",
            bucket=f"{site.prefix}-alb-logs-{site.account}-{site.region}"[:63].rstrip("-"),
            force_destroy=not site.prod,
            tags=site.tagged("alb-logs"),
            opts=self.child(),
        )
        # No public access of any kind, whatever a later ACL or policy says.
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self.child(),
        )
        # The bucket owns every object; ACLs are disabled.
        aws.s3.BucketOwnershipControls(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=self.child(),
        )
        # Encrypted at rest. ALB log delivery supports SSE-S3 only (not SSE-KMS).
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=self.child(),
        )
        # Versioned, so a deleted or overwritten log can be recovered.
        aws.s3.BucketVersioning(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=self.child(),
        )
        # Logs live as long as the site's log retention, old versions 30 days more.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            rules=[
                {
                    "id": "expire-access-logs",
                    "status": "Enabled",
                    "filter": {"prefix": f"{LOG_PREFIX}/"},
                    "expiration": {"days": args.log_retention_days},
                    "noncurrent_version_expiration": {"noncurrent_days": 30},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                }
            ],
            opts=self.child(),
        )
        # TLS-only access, and write access for ELB log delivery to this account's prefix only.
        log_objects = self.log_bucket.arn.apply(lambda arn: f"{arn}/{LOG_PREFIX}/AWSLogs/{site.account}/*")
        return aws.s3.BucketPolicy(
            f"{name}-logs",
            bucket=self.log_bucket.id,
            policy=policy_json(
                [
                    {
                        "Sid": "ElbLogDelivery",
                        "Effect": "Allow",
                        "Principal": elb_log_principal(site),
                        "Action": "s3:PutObject",
                        "Resource": log_objects,
                    },
                    deny_insecure_transport(
                        "s3", [self.log_bucket.arn, self.log_bucket.arn.apply(lambda a: f"{a}/*")]
                    ),
                ]
            ),
            opts=self.child(depends_on=[block]),
        )

    def _certificate(self, name: str, site: AwsSite, domain: DomainSpec) -> pulumi.Output[str]:
        """A new ACM certificate for every name the site answers to (its own, then its aliases
        such as the edge's global name), each validated through the Route 53 zone."""
        assert domain.zone_id is not None
        names = domain.host_names
        # The site certificate, issued by ACM once the DNS records below prove every name.
        cert = aws.acm.Certificate(
            f"{name}-cert",
            domain_name=names[0],
            subject_alternative_names=names[1:] or None,
            validation_method="DNS",
            key_algorithm="EC_prime256v1",
            tags=site.tagged("cert"),
            opts=self.child(),
        )
        records = []
        for i, host in enumerate(names):
            option = cert.domain_validation_options.apply(
                lambda opts, host=host: next(o for o in opts if o.domain_name == host)
            )
            # The validation CNAME ACM asks for, one per name.
            records.append(
                aws.route53.Record(
                    f"{name}-cert-validation" + (f"-{i}" if i else ""),
                    zone_id=domain.zone_id,
                    name=option.apply(lambda o: o.resource_record_name or ""),
                    type=option.apply(lambda o: o.resource_record_type or "CNAME"),
                    records=[option.apply(lambda o: o.resource_record_value or "")],
                    ttl=60,
                    allow_overwrite=True,
                    opts=self.child(),
                )
            )
        # Waits until the certificate is issued, so the listener never gets a pending one.
        validation = aws.acm.CertificateValidation(
            f"{name}-cert",
            certificate_arn=cert.arn,
            validation_record_fqdns=[r.fqdn for r in records],
            opts=self.child(),
        )
        return validation.certificate_arn
