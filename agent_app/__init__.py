"""The containerised AI-agent service that every Skyfleet site runs."""
