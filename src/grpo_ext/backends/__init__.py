"""Where and how a run computes: hardware profiles, models and their loading, adapters, generation (vLLM, the
static-cache rollout)."""
