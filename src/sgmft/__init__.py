"""sgmft: Similarity Guided Multimodal Fusion Transformer for semantic location prediction."""

__version__ = "0.1.0"

#: The paper's eight semantic places (section 3.4), in the order used for class indices.
PLACES: tuple[str, ...] = (
    "home", "work", "school", "restaurant", "cinema", "gym", "shopping", "travel",
)
