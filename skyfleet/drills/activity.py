"""Skyfleet's actions and probes under the one module name drill files use in their providers.

``module: skyfleet.drills.activity`` with ``func: site_down`` (and so on) names a function
declared in ``skyfleet.drills.actions.<platform>``; this module gathers them all, so drill files
do not depend on how the actions are laid out. ``ACTIONS`` describes every one of them (its
platform, kind, undo and dry-run description).
"""

from __future__ import annotations

from skyfleet.drills.actions.aws import (
    aws_health_check_invert,
    aws_health_check_restore,
    aws_security_group_cut,
    aws_security_group_restore,
    aws_service_restore,
    aws_service_scale_to_zero,
)
from skyfleet.drills.actions.gcp import (
    gcp_ingress_internal,
    gcp_ingress_restore,
    gcp_traffic_restore,
    gcp_traffic_zero,
)
from skyfleet.drills.actions.kubernetes import (
    k8s_deny_all,
    k8s_deny_all_remove,
    k8s_scale_restore,
    k8s_scale_to_zero,
)
from skyfleet.drills.actions.lab import (
    broker_down,
    broker_up,
    cache_primary_down,
    cache_restore,
    faulted_site_back_in_rotation,
    faulted_site_left_rotation,
    faulted_site_out_of_rotation,
    latency_clear,
    packet_loss_clear,
    partition_heal,
    replica_down,
    replica_resume,
    replica_slow,
    replica_up,
    site_backends,
    site_down,
    site_latency,
    site_out_of_rotation,
    site_packet_loss,
    site_partition,
    site_up,
)
from skyfleet.drills.actions.registry import ACTIONS, ActionInfo

__all__ = [
    "ACTIONS",
    "ActionInfo",
    "aws_health_check_invert",
    "aws_health_check_restore",
    "aws_security_group_cut",
    "aws_security_group_restore",
    "aws_service_restore",
    "aws_service_scale_to_zero",
    "broker_down",
    "broker_up",
    "cache_primary_down",
    "cache_restore",
    "faulted_site_back_in_rotation",
    "faulted_site_left_rotation",
    "faulted_site_out_of_rotation",
    "gcp_ingress_internal",
    "gcp_ingress_restore",
    "gcp_traffic_restore",
    "gcp_traffic_zero",
    "k8s_deny_all",
    "k8s_deny_all_remove",
    "k8s_scale_restore",
    "k8s_scale_to_zero",
    "latency_clear",
    "packet_loss_clear",
    "partition_heal",
    "replica_down",
    "replica_resume",
    "replica_slow",
    "replica_up",
    "site_backends",
    "site_down",
    "site_latency",
    "site_out_of_rotation",
    "site_packet_loss",
    "site_partition",
    "site_up",
]
