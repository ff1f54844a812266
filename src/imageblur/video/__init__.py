"""Videos: probing and checks, decoding, tracking faces between frames, rendering and
muxing. `sightings` holds the contract between detection over frames and the masks a
frame is rendered with."""
