# Get the audit trail for this session
trail = h.get_audit_trail(session_id=session["session_id"])

for entry in trail["entries"]:
    status = "DENIED" if entry.get("flagged") else "OK"
    print(f"{entry['timestamp']} | {entry['tool']} | {status} | ${entry['cost_usd']:.2f}")

# Spend summary
spend = h.get_spend(session_id=session["session_id"])
print(f"\nTotal spend: ${spend['total_usd']:.2f}")
