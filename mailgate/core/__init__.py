"""The pure core: reading mail, classifying, routing, SLA arithmetic, trust, rendering. No I/O."""
