"""Planning watches onto the debug registers: watch specs, ranges split into registers, the plan of slots (above the kernel's slot model)."""
