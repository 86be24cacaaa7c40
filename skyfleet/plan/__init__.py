"""Offline plans: a Pulumi Python program run under the SDK's mocks with a stack's config."""

from skyfleet.plan.runner import ConfigError, Plan, PlanError, PlannedResource, Project, plan_stack

__all__ = ["ConfigError", "Plan", "PlanError", "PlannedResource", "Project", "plan_stack"]
