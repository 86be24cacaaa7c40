"""Tests of the agent app against real servers."""

import warnings

# google-api-core warns at import about a Python end-of-life years away.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")
