-- The follow-up's "speed" rating travels with the ticket state: the indicator
-- stage rebuilds a ticket's applied contribution from its stored state.
ALTER TABLE {db}.ticket_state ADD COLUMN IF NOT EXISTS followup_reach_speed Nullable(UInt8) AFTER followup_nps;
