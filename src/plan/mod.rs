//! Pure planning: (Profile, Inventory, State) → Plan. Decides VMIDs, addresses, placement, GPUs. No IO.
