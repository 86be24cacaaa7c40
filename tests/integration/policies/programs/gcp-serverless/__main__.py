# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""An event pipeline on GCP: a Cloud Run ingest service publishes to Pub/Sub; a Cloud Function
(2nd gen) consumes, with poison messages parked on a dead-letter topic; results land in
BigQuery. `hardened` picks the careful settings; the others are planted violations."""

import pulumi
import pulumi_gcp as gcp

config = pulumi.Config()
hardened = config.require_bool("hardened")
PROJECT = "acme-events"
REGION = "europe-west1"
labels = {"owner": "data", "environment": "prod", "cost-center": "cc-5", "app": "events"}
PUBSUB_AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"


def pick(good, bad):
    return good if hardened else bad


def sa(name):
    account = gcp.serviceaccount.Account(name, account_id=name, display_name=name)
    return account, account.email.apply(lambda e: f"serviceAccount:{e}")


ingest_sa, ingest_member = sa("ingest")
worker_sa, worker_member = sa("worker")

events = gcp.pubsub.Topic("events", labels=labels, message_retention_duration="86400s")
parked = gcp.pubsub.Topic("events-parked", labels=labels, message_retention_duration="604800s")
subscription_args = dict(
    topic=events.id,
    labels=labels,
    ack_deadline_seconds=60,
    retry_policy={"minimum_backoff": "10s", "maximum_backoff": "600s"},
)
if hardened:
    subscription_args["dead_letter_policy"] = {"dead_letter_topic": parked.id, "max_delivery_attempts": 10}
work = gcp.pubsub.Subscription("events-worker", **subscription_args)  # planted: no dead-letter topic
# Held for inspection; it drains the dead-letter topic, so it has none of its own.
gcp.pubsub.Subscription(
    "events-parked-hold",
    topic=parked.id,
    labels=labels,
    ack_deadline_seconds=600,
    message_retention_duration="604800s",
)
gcp.pubsub.TopicIAMMember(
    "events-publisher",
    topic=events.name,
    role="roles/pubsub.publisher",
    member=pick(ingest_member, "allUsers"),
)  # planted: anyone may publish
gcp.pubsub.TopicIAMMember(
    "parked-publisher", topic=parked.name, role="roles/pubsub.publisher", member=PUBSUB_AGENT
)
gcp.pubsub.SubscriptionIAMMember(
    "worker-subscriber", subscription=work.name, role="roles/pubsub.subscriber", member=PUBSUB_AGENT
)

api_key = gcp.secretmanager.Secret(
    "partner-api-key", secret_id="partner-api-key", labels=labels, replication={"auto": {}}
)
gcp.secretmanager.SecretIamMember(
    "ingest-reads-key", secret_id=api_key.id, role="roles/secretmanager.secretAccessor", member=ingest_member
)

env = [{"name": "TOPIC", "value": events.id}, {"name": "TOKEN_TTL", "value": "300"}]
if hardened:
    env.append(
        {
            "name": "PARTNER_API_KEY",
            "value_source": {"secret_key_ref": {"secret": api_key.secret_id, "version": "latest"}},
        }
    )
else:
    env.append({"name": "PARTNER_API_KEY", "value": "AIzaSyD4-3xq8vR7nT2mL0pK9wJ6hF5gB1cE8aZ"})  # planted
ingest = gcp.cloudrunv2.Service(
    "ingest",
    location=REGION,
    ingress=pick("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER", "INGRESS_TRAFFIC_ALL"),  # planted: direct access
    deletion_protection=False,
    labels=labels,
    template={
        # planted: the default compute service account
        "service_account": ingest_sa.email if hardened else None,
        "containers": [
            {"image": f"{REGION}-docker.pkg.dev/{PROJECT}/apps/ingest@sha256:" + "c" * 64, "envs": env}
        ],
    },
)
gcp.cloudrunv2.ServiceIamMember(
    "ingest-public", name=ingest.name, location=REGION, role="roles/run.invoker", member="allUsers"
)

worker = gcp.cloudfunctionsv2.Function(
    "worker",
    location=REGION,
    labels=labels,
    build_config={
        "runtime": "python312",
        "entry_point": "handle",
        "source": {"storage_source": {"bucket": "acme-events-src", "object": "worker.zip"}},
    },
    service_config={
        "ingress_settings": pick("ALLOW_INTERNAL_ONLY", "ALLOW_ALL"),  # planted: reachable from anywhere
        "service_account_email": worker_sa.email,
        "environment_variables": {"DATASET": "events", "PASSWORD_MIN_LENGTH": "16"},
    },
    event_trigger={
        "trigger_region": REGION,
        "event_type": "google.cloud.pubsub.topic.v1.messagePublished",
        "pubsub_topic": events.id,
        "retry_policy": "RETRY_POLICY_RETRY",
    },
)

dataset = gcp.bigquery.Dataset(
    "events",
    dataset_id="events",
    location="EU",
    labels=labels,
    delete_contents_on_destroy=False,
    accesses=[
        {"role": "OWNER", "special_group": "projectOwners"},
        {"role": "WRITER", "user_by_email": worker_sa.email},
        # planted: every Google account may read the dataset
        pick(
            {"role": "READER", "group_by_email": "analysts@acme.example"},
            {"role": "READER", "special_group": "allAuthenticatedUsers"},
        ),
    ],
)
gcp.projects.IAMMember(
    "worker-token-creator",
    project=PROJECT,
    # planted: the worker may mint tokens for every service account of the project
    role=pick("roles/bigquery.jobUser", "roles/iam.serviceAccountTokenCreator"),
    member=worker_member,
)
