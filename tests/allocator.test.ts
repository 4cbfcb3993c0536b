import { describe, expect, test } from "bun:test";
import { ALLOCATOR_OPTIONS, withAllocatorOptions } from "../lib/allocator.ts";

describe("withAllocatorOptions", () => {
  test("adds missing options", () => {
    const env = withAllocatorOptions({ PATH: "/usr/bin" });

    expect(env).toEqual({ PATH: "/usr/bin", ...ALLOCATOR_OPTIONS });
  });

  test("keeps a value already set", () => {
    const env = withAllocatorOptions({ PATH: "/usr/bin", MIMALLOC_PURGE_HOLES_MIN_INTERVAL: "100" });

    expect(env).toBeUndefined();
  });

  test("drops unset variables", () => {
    const env = withAllocatorOptions({ PATH: "/usr/bin", EMPTY: undefined });

    expect(env).toBeDefined();
    expect(Object.keys(env!)).not.toContain("EMPTY");
  });
});
