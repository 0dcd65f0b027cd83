"""The one guide step: conversation -> (refine) -> risk -> retrieve -> gate/select -> render."""
