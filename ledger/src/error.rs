//! Error types of the ledger. Every rejection carries what was expected and what was found, so
//! a peer's bad block can be diagnosed from the log line alone.

use thiserror::Error;

use crate::crypto::{Hash32, MemberKey};
use crate::units::{MicroCredits, Price, WattHours};

/// Bytes that are not the canonical encoding of any value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early.
    #[error("input ends at offset {offset}, {needed} more bytes needed")]
    UnexpectedEnd {
        /// Offset where reading stopped.
        offset: usize,
        /// Bytes the next field needed.
        needed: usize,
    },
    /// Bytes were left after the value.
    #[error("{remaining} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Offset of the first unread byte.
        offset: usize,
        /// How many bytes were left.
        remaining: usize,
    },
    /// A length prefix above the limit.
    #[error("length {length} at offset {offset} exceeds the limit {max}")]
    LengthTooLarge {
        /// Offset of the length prefix.
        offset: usize,
        /// The length read.
        length: u32,
        /// The limit.
        max: u32,
    },
    /// An unsupported format version.
    #[error("unsupported {what} version {found}, expected {expected}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The supported version.
        expected: u8,
        /// The version found.
        found: u8,
    },
    /// A transaction kind this node does not know.
    #[error("unknown transaction kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A consensus message kind or vote step this node does not know.
    #[error("unknown consensus message kind or vote step {kind}")]
    UnknownConsensusKind {
        /// The byte.
        kind: u8,
    },
    /// A key whose first byte is not 0x02 or 0x03.
    #[error("public key prefix {prefix:#04x} is not a compressed point")]
    InvalidKeyPrefix {
        /// The prefix byte.
        prefix: u8,
    },
    /// A key that is not a point on secp256k1.
    #[error("invalid public key {key}")]
    InvalidKey {
        /// The key as given.
        key: String,
    },
    /// An option flag that is neither 0 nor 1.
    #[error("flag byte {flag} is neither 0 nor 1")]
    BadFlag {
        /// The byte.
        flag: u8,
    },
    /// A signature whose `r` or `s` is out of range.
    #[error("signature is not a valid compact ECDSA signature")]
    InvalidSignature,
    /// A signature with `s` in the upper half: the malleable twin of a canonical one.
    #[error("signature has a high S value (non-canonical)")]
    HighS,
    /// Text that is not UTF-8.
    #[error("{what} is not UTF-8")]
    NotUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A member change kind other than 1 (add) and 2 (remove).
    #[error("unknown member change kind {kind}")]
    UnknownMemberChange {
        /// The byte.
        kind: u8,
    },
    /// An attestor signer code other than 0 (gateway) and 1 (device).
    #[error("unknown attestor signer {code} (0 = gateway, 1 = device)")]
    UnknownAttestorSigner {
        /// The byte.
        code: u8,
    },
}

/// Why a transaction is invalid against the chain or the current state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TxError {
    /// Signed for another chain (another genesis).
    #[error("transaction is for chain {found}, this chain is {expected}")]
    WrongChain {
        /// This chain's genesis hash.
        expected: Hash32,
        /// The transaction's chain id.
        found: Hash32,
    },
    /// The sender is not a member of the community.
    #[error("sender {sender} is not a member")]
    UnknownSender {
        /// The sender.
        sender: MemberKey,
    },
    /// The recipient is not a member of the community.
    #[error("recipient {recipient} is not a member")]
    UnknownRecipient {
        /// The recipient.
        recipient: MemberKey,
    },
    /// The signature does not verify against the sender's key.
    #[error("bad signature from {sender}")]
    BadSignature {
        /// The claimed sender.
        sender: MemberKey,
    },
    /// The fee is not the genesis fee.
    #[error("fee {found} differs from the community fee {expected}")]
    WrongFee {
        /// The genesis fee.
        expected: MicroCredits,
        /// The fee offered.
        found: MicroCredits,
    },
    /// The nonce is not the sender's next nonce (a replay, or out of order).
    #[error("nonce {found} for {sender}, expected {expected}")]
    BadNonce {
        /// The sender.
        sender: MemberKey,
        /// The next nonce in state.
        expected: u64,
        /// The nonce in the transaction.
        found: u64,
    },
    /// The sender cannot pay amount plus fee.
    #[error("{account} needs {needed}, has {available}")]
    BalanceInsufficient {
        /// The paying account.
        account: MemberKey,
        /// Amount plus fee.
        needed: MicroCredits,
        /// The balance.
        available: MicroCredits,
    },
    /// A transfer of zero credits.
    #[error("transfer amount is zero")]
    ZeroAmount,
    /// A transfer to oneself.
    #[error("transfer to self")]
    SelfTransfer,
    /// A balance would overflow `u64`.
    #[error("balance overflow for {account}")]
    Overflow {
        /// The account that would overflow.
        account: MemberKey,
    },
    /// The battery attestation does not verify against the home's attestor key.
    #[error("attestation for {home} is not signed by its battery")]
    BadAttestation {
        /// The home.
        home: MemberKey,
    },
    /// The home already has an attestation for this interval.
    #[error("{home} already attested interval {interval}")]
    AlreadyAttested {
        /// The home.
        home: MemberKey,
        /// The interval.
        interval: u64,
    },
    /// The interval is older than intervals of this home already retired from the state
    /// (protocol.md §12.9): it could be a second claim for energy retired with them.
    #[error("{home} cannot attest interval {interval}: its intervals below {from} are retired")]
    IntervalRetired {
        /// The home.
        home: MemberKey,
        /// The interval.
        interval: u64,
        /// The first interval it can still attest.
        from: u64,
    },
    /// The attestation would leave the home with more energy attested and not yet delivered
    /// than its equipment in genesis can hold and make in an hour.
    #[error(
        "attestation of {attested} Wh for {home} is beyond its equipment: it would have \
         {outstanding} Wh attested and not delivered, and its genesis equipment bounds that at \
         {bound} Wh (battery + one hour of PV at nameplate)"
    )]
    BeyondEquipment {
        /// The home.
        home: MemberKey,
        /// The attestation's energy, Wh.
        attested: u64,
        /// Attested and not yet delivered with this attestation, Wh.
        outstanding: u64,
        /// The bound, Wh.
        bound: u64,
    },
    /// An offer, bid or attestation of zero energy.
    #[error("energy amount is zero")]
    ZeroEnergy,
    /// A price above the grid tariff.
    #[error("price {price} is above the grid tariff {tariff}")]
    PriceAboveTariff {
        /// The price.
        price: Price,
        /// The tariff.
        tariff: Price,
    },
    /// The expiry lies before the block.
    #[error("expiry height {expiry} is before height {height}")]
    ExpiryPassed {
        /// The contract's expiry.
        expiry: u64,
        /// The block height.
        height: u64,
    },
    /// The home cannot back the offer with attested, uncommitted energy.
    #[error("{home} offers {needed}, has {available} attested and uncommitted")]
    EnergyInsufficient {
        /// The home.
        home: MemberKey,
        /// Energy offered.
        needed: WattHours,
        /// Sellable energy.
        available: WattHours,
    },
    /// No sale contract with this id.
    #[error("unknown contract {contract}")]
    UnknownContract {
        /// The id.
        contract: Hash32,
    },
    /// The contract is sold or expired.
    #[error("contract {contract} is not open")]
    ContractNotOpen {
        /// The id.
        contract: Hash32,
    },
    /// The payment is not exactly the contract's price.
    #[error("payment {found}, the contract costs {expected}")]
    WrongPayment {
        /// `energy × price / 1000`.
        expected: MicroCredits,
        /// The payment offered.
        found: MicroCredits,
    },
    /// A member proposal or approval that cannot apply.
    #[error("member change refused: {reason}")]
    MemberChangeInvalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// An approval of a proposal that is not open.
    #[error("no open member proposal {proposal}")]
    UnknownProposal {
        /// The proposal id.
        proposal: Hash32,
    },
    /// Evidence that proves no double vote.
    #[error("invalid evidence: {reason}")]
    EvidenceInvalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// This double vote was already recorded.
    #[error("the double vote of {offender} in checkpoint {checkpoint} is already recorded")]
    EvidenceKnown {
        /// The offender.
        offender: MemberKey,
        /// The checkpoint.
        checkpoint: u64,
    },
    /// A seller buying its own contract.
    #[error("a seller cannot buy its own contract")]
    OwnContract,
    /// No trade with this id.
    #[error("unknown trade {trade}")]
    UnknownTrade {
        /// The id.
        trade: Hash32,
    },
    /// Only the home that measures the delivery reports it: the seller for a discharge trade,
    /// the buyer for a charge trade.
    #[error("only the home that measures delivery (the seller of a discharge, the buyer of a charge) reports {trade}")]
    NotSeller {
        /// The trade.
        trade: Hash32,
    },
    /// The trade is not final yet: its energy must not be released, nor reported delivered.
    #[error("trade {trade} is not released yet")]
    NotReleased {
        /// The trade.
        trade: Hash32,
    },
    /// Delivery was already reported.
    #[error("delivery of {trade} was already reported")]
    AlreadyDelivered {
        /// The trade.
        trade: Hash32,
    },
    /// The delivery deadline has passed.
    #[error("delivery deadline {deadline} passed at height {height}")]
    DeadlinePassed {
        /// The deadline.
        deadline: u64,
        /// The block height.
        height: u64,
    },
    /// More delivered than sold.
    #[error("{delivered} delivered for a trade of {sold}")]
    OverDelivery {
        /// Reported.
        delivered: WattHours,
        /// Sold.
        sold: WattHours,
    },
    /// The delivery receipt is not signed by the seller's battery.
    #[error("delivery receipt for {trade} is not signed by the seller's battery")]
    BadReceipt {
        /// The trade.
        trade: Hash32,
    },
    /// The transaction is for another auction round or phase.
    #[error("round {round} is not in its {phase} phase at height {height}")]
    WrongPhase {
        /// The round named.
        round: u64,
        /// The phase the transaction needs.
        phase: &'static str,
        /// The block height.
        height: u64,
    },
    /// One join or commitment per member and round.
    #[error("{member} already took part in round {round}")]
    AlreadyInRound {
        /// The member.
        member: MemberKey,
        /// The round.
        round: u64,
    },
    /// A home on both sides of one auction round (it would be filled from its own pool).
    #[error("{member} cannot both sell and bid in round {round}")]
    BothSidesOfRound {
        /// The member.
        member: MemberKey,
        /// The round.
        round: u64,
    },
    /// A reveal without a commitment, or already revealed.
    #[error("no open commitment from {member} in round {round}")]
    NoCommitment {
        /// The member.
        member: MemberKey,
        /// The round.
        round: u64,
    },
    /// The revealed bid does not match the commitment.
    #[error("revealed bid does not match the commitment of {member}")]
    CommitmentMismatch {
        /// The member.
        member: MemberKey,
    },
    /// The market is switched off in this genesis (no auction rounds).
    #[error("auctions are disabled in this community")]
    AuctionsDisabled,
    /// The genesis has no day-ahead schedule.
    #[error("day-ahead scheduling is disabled in this community")]
    ScheduleDisabled,
    /// The day already has a schedule.
    #[error("day {day} already has a schedule")]
    ScheduleExists {
        /// The day.
        day: u64,
    },
    /// A proposal's signature does not verify, or a round is not one proposal per member.
    #[error("day {day}, iteration {round}: {reason}")]
    BadProposal {
        /// The day.
        day: u64,
        /// The iteration.
        round: usize,
        /// What is wrong.
        reason: String,
    },
    /// The recorded iterations do not follow the stopping rule.
    #[error("day {day}: {source}")]
    BadDispatch {
        /// The day.
        day: u64,
        /// Why.
        source: crate::market::dispatch::DispatchError,
    },
    /// The committed figures differ from what the proposals give.
    #[error("day {day}: the committed {field} differs from the replay of the proposals")]
    ScheduleMismatch {
        /// The day.
        day: u64,
        /// Which figure.
        field: &'static str,
    },
    /// The day is older than days already retired from the state (§12.9): a second schedule
    /// for it could bill it twice.
    #[error("day {day} is retired: schedules start from day {from}")]
    DayRetired {
        /// The day.
        day: u64,
        /// The first day a schedule can still be committed for.
        from: u64,
    },
    /// No schedule was committed for the day.
    #[error("day {day} has no schedule")]
    UnknownDay {
        /// The day.
        day: u64,
    },
    /// The day is billed already.
    #[error("day {day} is billed already")]
    DayBilled {
        /// The day.
        day: u64,
    },
    /// The home sent its readings for the day already.
    #[error("home {home} sent its readings of day {day} already")]
    ReadingsExist {
        /// The day.
        day: u64,
        /// The home.
        home: MemberKey,
    },
    /// Readings refused by the billing contract.
    #[error(transparent)]
    Billing(#[from] crate::market::billing::BillingError),
}

/// Why a block is invalid or cannot be attached.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The block does not decode.
    #[error("block does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A certificate that does not prove finality.
    #[error("bad certificate: {0}")]
    BadCertificate(crate::finality::CertificateError),
    /// A certificate names a block this node does not have above its final block.
    #[error("cannot finalize unknown block {hash}")]
    FinalizeUnknown {
        /// The block.
        hash: Hash32,
    },
    /// Built for another chain.
    #[error("block is for chain {found}, this chain is {expected}")]
    WrongChain {
        /// This chain's genesis hash.
        expected: Hash32,
        /// The header's chain id.
        found: Hash32,
    },
    /// The parent block is not known (yet): fetch it first.
    #[error("unknown parent {parent} for height {height}")]
    UnknownParent {
        /// The header's previous hash.
        parent: Hash32,
        /// The header's height.
        height: u64,
    },
    /// The height is not the parent's height plus one.
    #[error("height {found}, expected {expected}")]
    BadHeight {
        /// Parent height + 1.
        expected: u64,
        /// Header height.
        found: u64,
    },
    /// The slot does not advance past the parent's slot.
    #[error("slot {found} is not after the parent's slot {parent_slot}")]
    SlotNotAfterParent {
        /// The parent's slot.
        parent_slot: u64,
        /// The header's slot.
        found: u64,
    },
    /// The slot lies in the future.
    #[error("slot {found} is in the future (current slot {current})")]
    SlotInFuture {
        /// The current slot.
        current: u64,
        /// The header's slot.
        found: u64,
    },
    /// The producer is not among the elected ranks for this slot.
    #[error("producer {producer} is not elected for slot {slot}")]
    ProducerNotElected {
        /// The header's producer.
        producer: MemberKey,
        /// The slot.
        slot: u64,
    },
    /// The header claims more blocks than slots.
    #[error("block height {height} is above its slot {slot} (at most one block per slot)")]
    HeightAboveSlot {
        /// The height claimed.
        height: u64,
        /// The slot claimed.
        slot: u64,
    },
    /// The producer is not a member of the community.
    #[error("producer {producer} is not a member")]
    UnknownProducer {
        /// The key in the header.
        producer: MemberKey,
    },
    /// The producer's signature does not verify.
    #[error("bad producer signature on block {height}")]
    BadProducerSignature {
        /// The block height.
        height: u64,
    },
    /// The header's transaction count differs from the body.
    #[error("header says {header} transactions, body has {body}")]
    TxCountMismatch {
        /// Count in the header.
        header: u32,
        /// Count in the body.
        body: usize,
    },
    /// Too many transactions.
    #[error("{count} transactions exceed the limit {max}")]
    TooManyTransactions {
        /// Count in the block.
        count: usize,
        /// Genesis limit.
        max: u32,
    },
    /// The Merkle root does not match the transactions.
    #[error("merkle root {found} does not match the transactions ({computed})")]
    MerkleRootMismatch {
        /// Root in the header.
        found: Hash32,
        /// Root computed from the body.
        computed: Hash32,
    },
    /// A transaction is invalid.
    #[error("transaction {index} is invalid: {error}")]
    InvalidTransaction {
        /// Position in the block.
        index: usize,
        /// The rejection.
        error: TxError,
    },
    /// A signature-verifier thread died before it answered: the block cannot be shown valid,
    /// so it is refused (never taken as "no bad signature").
    #[error("the signature verifier for transactions {first}..{end} failed")]
    VerifierFailed {
        /// First transaction of the verifier's share.
        first: usize,
        /// One past its last.
        end: usize,
    },
    /// The state hash does not match the state after the transactions.
    #[error("state hash {found} does not match the computed state {computed}")]
    StateHashMismatch {
        /// Hash in the header.
        found: Hash32,
        /// Hash computed.
        computed: Hash32,
    },
    /// The block would replace a final block.
    #[error("height {height} is at or below the finalized height {finalized}")]
    ConflictsWithFinalized {
        /// The block height.
        height: u64,
        /// The finalized height.
        finalized: u64,
    },
    /// The block is already known.
    #[error("block {hash} is already known")]
    Duplicate {
        /// The block hash.
        hash: Hash32,
    },
    /// A counter would overflow.
    #[error("arithmetic overflow in {what}")]
    Overflow {
        /// What overflowed.
        what: &'static str,
    },
}

/// A genesis file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The JSON does not parse or misses fields.
    #[error("genesis does not parse: {0}")]
    Parse(String),
    /// A field has an unusable value.
    #[error("genesis field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A storage failure. Corruption names the height where the stored chain stopped verifying.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A stored record is corrupt.
    #[error("corrupt record at height {height}: {reason}")]
    Corrupt {
        /// The height.
        height: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store belongs to another chain.
    #[error("store holds chain {found}, expected {expected}")]
    WrongChain {
        /// The genesis hash expected.
        expected: Hash32,
        /// The genesis hash found.
        found: Hash32,
    },
    /// Another process (a running gateway) holds the store's lock.
    #[error(
        "{path} is in use by another process (a running gateway holds its lock): stop that \
         gateway first, or read its chain through its API (GET /api/head, /api/chain/final)"
    )]
    InUse {
        /// The store's directory.
        path: String,
    },
    /// The store's files cannot be read as a block store of this version.
    #[error(
        "{path} is damaged or not this version's block store ({reason}); move it \
         aside and start the gateway: it resyncs the chain from peers"
    )]
    Unreadable {
        /// The store's directory.
        path: String,
        /// What the store library said.
        reason: String,
    },
    /// A block could not be attached.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Signing a second, different block for a slot already signed.
    #[error("refusing to sign slot {slot}: slot {last_signed} was already signed")]
    SlotAlreadySigned {
        /// The slot requested.
        slot: u64,
        /// The last slot signed.
        last_signed: u64,
    },
    /// Signing for a checkpoint below the one this node already votes in.
    #[error("refusing to vote in checkpoint {checkpoint}: already voting in {current}")]
    CheckpointPassed {
        /// The checkpoint requested.
        checkpoint: u64,
        /// The checkpoint of the guard's records.
        current: u64,
    },
    /// The record of what this node signed is gone or damaged: signing waits until the node
    /// has moved past everything it may have signed before (docs/protocol.md §10).
    #[error(
        "not signing: {path} {loss}; waiting to move past what this key may have signed before"
    )]
    SignerStateLost {
        /// The guard's file.
        path: String,
        /// What happened to it.
        loss: GuardLoss,
    },
}

/// What happened to a signer guard's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardLoss {
    /// Not there, though the node has a chain (or the other guard's file is there).
    Missing,
    /// There, but not a valid record.
    Damaged,
}

impl std::fmt::Display for GuardLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuardLoss::Missing => "is missing",
            GuardLoss::Damaged => "is damaged",
        })
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}
