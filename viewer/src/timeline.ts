// Milestones of a page load (performance.now(): ms from navigation start), first time only.
// The benchmark and the tests read them through window.dcmviewer.stats().timeline.

export const timeline: Record<string, number> = {};

export function mark(name: string): void {
  if (!(name in timeline)) timeline[name] = Math.round(performance.now() * 10) / 10;
}
