"""The red-team loop: attacker, defender and evaluator in rounds; repair grows the library."""
