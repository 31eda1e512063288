"""Loss terms and the state they need, as pure functions and small modules, each tested with
hand-computed values: the detector's box-head losses (swappable classifier loss) and the memory bank."""
