/** Seids the demo and its writer process share. */
export const COUNTER = 900n;
export const GROUP = [901n, 902n, 903n] as const;
