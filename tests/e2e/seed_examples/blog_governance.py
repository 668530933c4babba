from haldir import HaldirClient

h = HaldirClient(api_key="hld_xxx", base_url="https://haldir.xyz")

# Create a scoped session — the agent can only read and spend up to $50
session = h.create_session(
    agent_id="order-processing-bot",
    scopes=["read", "spend:50"],
    ttl=3600  # Session expires in 1 hour
)

# Store secrets in an encrypted vault — agents never see raw keys
h.store_secret("stripe_key", "sk_live_xxx", scope_required="spend")

# When the agent needs the key, Haldir checks session scope first
key = h.get_secret("stripe_key", session_id=session["session_id"])

# Authorize a payment — Haldir enforces the $50 budget
h.authorize_payment(session["session_id"], amount=29.99)

# Every action is logged immutably
h.log_action(
    session["session_id"],
    tool="stripe",
    action="charge",
    cost_usd=29.99
)

# When the agent's job is done, revoke access
h.revoke_session(session["session_id"])
