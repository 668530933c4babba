haldir compliance evidence --since 2026-01-01 --out evidence-q1-2026.md
