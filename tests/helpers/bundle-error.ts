import { BundleError } from "../../lib/errors.ts";

/** Runs `action` and returns the BundleError it raises. Raises any other error, and an Error when nothing is raised. */
export function bundleErrorOf(action: () => unknown): BundleError {
  try {
    action();
  } catch (error) {
    if (error instanceof BundleError) {
      return error;
    }
    throw error;
  }
  throw new Error("expected a BundleError, but nothing was raised");
}
