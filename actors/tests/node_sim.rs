//! Several community nodes driven in lock-step on a virtual clock (`gridlet_hil::lockstep`),
//! with a simulated bus that can drop messages or keep a node offline: they must agree on one
//! chain, every member must produce, and a node that joins late must catch up by asking for
//! blocks by height.

use gridlet_core::node::{BusMessage, Effect, Input, SYNC_ANSWER_BYTES_PER_SLOT};
use gridlet_hil::lockstep::LockstepNet;
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::crypto::Signature;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::MicroCredits;
use gridlet_ledger::{Block, BlockHeader, Genesis, Hash32, MemberKey, Transaction, TxPayload};
use secp256k1::SecretKey;

fn community(n: usize) -> (Genesis, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = (0..n as u64).map(|i| deterministic_key(77, i)).collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(78, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000),
        })
        .collect();
    (
        Genesis::with_defaults("node-sim", 0, members, SelectionRule::Paper),
        keys,
    )
}

fn run(net: &mut LockstepNet, ms: u64) {
    for _ in 0..ms / 100 {
        net.step(100).unwrap();
    }
}

/// The heads once every node saw the last block: a block made in a step reaches the nodes
/// that ticked before its producer only in the next step.
fn settled_heads(net: &mut LockstepNet) -> Vec<(u64, String)> {
    for _ in 0..5 {
        let heads = net.heads();
        if heads.iter().all(|h| *h == heads[0]) {
            return heads;
        }
        net.step(100).unwrap();
    }
    net.heads()
}

#[test]
fn four_nodes_agree_and_every_member_produces() {
    let (genesis, keys) = community(4);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    // A transfer submitted at node 0 reaches the producer, whoever it is.
    let tx = Transaction {
        chain_id: genesis.hash(),
        sender: net.nodes[0].member(),
        nonce: 0,
        fee: MicroCredits::new(100),
        payload: TxPayload::Transfer {
            to: net.nodes[1].member(),
            amount: MicroCredits::new(42),
        },
    }
    .sign(&keys[0]);
    net.input(0, Input::Submit(Box::new(tx))).unwrap();
    run(&mut net, 60_500);
    let heads = net.heads();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    assert!(heads[0].0 >= 55, "{heads:?}");
    assert_eq!(net.rejected, 0, "nothing is refused on a lossless bus");
    let state = net.nodes[2].chain().chain().head_state().clone();
    assert_eq!(
        state.account(&net.nodes[1].member()).balance.get(),
        1_000_042
    );
    for n in &net.nodes {
        let k = n.member();
        let produced = (1..=heads[0].0)
            .filter(|h| n.chain().block_at(*h).unwrap().unwrap().header.producer == k)
            .count();
        assert!(produced > 0, "{k:?} never produced");
    }
}

#[test]
fn a_late_node_catches_up_by_height_and_lost_messages_are_recovered() {
    let (genesis, keys) = community(4);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    net.drop_every = Some(7); // one message in seven is lost
    net.online[3] = false;
    run(&mut net, 40_000);
    let ahead = net.nodes[0].chain().chain().head_height();
    assert!(ahead >= 30);
    assert_eq!(net.nodes[3].chain().chain().head_height(), 0);
    net.online[3] = true;
    run(&mut net, 30_000);
    net.drop_every = None;
    run(&mut net, 3_000);
    let heads = settled_heads(&mut net);
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    assert!(heads[0].0 > ahead);
}

#[test]
fn a_transaction_in_an_abandoned_block_is_not_lost() {
    let (genesis, keys) = community(4);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 5_000);
    // Node 1 is cut off until it has put the transfer, which reaches only it, into a block of
    // its own branch (when that is depends on the producer schedule, so on the genesis).
    net.isolated[1] = true;
    let tx = Transaction {
        chain_id: genesis.hash(),
        sender: net.nodes[1].member(),
        nonce: 0,
        fee: MicroCredits::new(100),
        payload: TxPayload::Transfer {
            to: net.nodes[2].member(),
            amount: MicroCredits::new(42),
        },
    }
    .sign(&keys[1]);
    net.input(1, Input::Submit(Box::new(tx))).unwrap();
    let mut own = None;
    for _ in 0..300 {
        net.step(100).unwrap();
        let chain = net.nodes[1].chain().chain();
        let head = chain.head_height();
        let block = net.nodes[1].chain().block_at(head).unwrap().unwrap();
        if block.transactions.len() == 1 {
            own = Some((head, block.hash()));
            break;
        }
    }
    let (height, hash) = own.expect("node 1 included the transfer in its own block");
    net.isolated[1] = false;
    run(&mut net, 20_000);
    let heads = settled_heads(&mut net);
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    // Node 1's block lost to the others' branch…
    let canonical = net.nodes[1].chain().block_at(height).unwrap().unwrap();
    assert_ne!(
        canonical.hash(),
        hash,
        "the isolated branch won; no switch to test"
    );
    // …and its transfer went back into the mempool and onto the common chain.
    let state = net.nodes[0].chain().chain().head_state().clone();
    assert_eq!(
        state.account(&net.nodes[2].member()).balance.get(),
        1_000_042
    );
    assert_eq!(state.account(&net.nodes[1].member()).nonce, 1);
}

/// A block signed by `key` with the given height, slot and parent, and no transactions.
fn forged(genesis: &Genesis, key: &SecretKey, height: u64, slot: u64, parent: Hash32) -> String {
    let header = BlockHeader {
        chain_id: genesis.hash(),
        height,
        slot,
        prev_hash: parent,
        tx_root: Hash32([0; 32]),
        tx_count: 0,
        state_hash: Hash32([0; 32]),
        producer: MemberKey::from_secret(key),
    };
    let block = Block {
        signature: Signature::sign(&header.hash(), key),
        header,
        transactions: Vec::new(),
    };
    gridlet_ledger::codec::to_hex(&block.encode())
}

#[test]
fn forged_blocks_neither_stall_production_nor_become_sync_targets() {
    let (genesis, keys) = community(3);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 10_000);
    let before = settled_heads(&mut net)[0].0;
    // The field report's block: an unknown producer and an absurd height. Then a member's key
    // far ahead of the clock, and a member's block whose parent nobody has (a byzantine home).
    let outsider = deterministic_key(99, 1);
    let now_slot = genesis.slot_at(net.now_ms);
    let blocks = [
        forged(
            &genesis,
            &outsider,
            999_999_999,
            999_999_999,
            Hash32([7; 32]),
        ),
        forged(&genesis, &outsider, before + 1, now_slot, Hash32([7; 32])),
        forged(
            &genesis,
            &keys[0],
            999_999_999,
            999_999_999,
            Hash32([7; 32]),
        ),
        // Above the final height (blocks are final within their slot), so it may wait.
        forged(
            &genesis,
            &keys[0],
            now_slot + 1,
            now_slot + 1,
            Hash32([8; 32]),
        ),
    ];
    let rejected_before = net.refusals.len();
    for hex in &blocks {
        for i in 0..3 {
            net.input(i, Input::Bus(BusMessage::Block { hex: hex.clone() }))
                .unwrap();
        }
    }
    // The first three are dropped by every node; the last waits for a parent that never
    // comes, holds production for at most a few slots, and is no sync target beyond its height.
    let refused: Vec<_> = net.refusals[rejected_before..]
        .iter()
        .filter(|(what, _, _)| what == "block")
        .collect();
    assert_eq!(
        refused.len(),
        9,
        "three forgeries refused by three nodes: {refused:?}"
    );
    run(&mut net, 20_000);
    let heads = settled_heads(&mut net);
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    assert!(
        heads[0].0 >= before + 12,
        "production went on: {before} → {}",
        heads[0].0
    );
    for n in &net.nodes {
        assert!(
            n.sync_lag() <= 60,
            "sync lag {} after forged heights",
            n.sync_lag()
        );
    }
}

#[test]
fn sync_answers_share_one_budget_per_slot() {
    let (genesis, keys) = community(3);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 120_000);
    // Fifty small requests in one slot, under as many names: together they draw at most the
    // per-slot budget, not fifty whole chains.
    let mut answered = 0usize;
    let mut asked = 0usize;
    for i in 0..50 {
        let request = BusMessage::SyncRequest {
            node: format!("stranger-{i}"),
            from_height: 1,
            max: 1_000,
        };
        asked += serde_json::to_string(&request).unwrap().len();
        for e in net.nodes[0].handle(Input::Bus(request)).unwrap() {
            if let Effect::Publish(BusMessage::SyncResponse { blocks, .. }) = e {
                answered += blocks.iter().map(String::len).sum::<usize>();
            }
        }
    }
    let one_chain: usize = (1..=net.nodes[0].chain().chain().head_height())
        .map(|h| {
            net.nodes[0]
                .chain()
                .block_at(h)
                .unwrap()
                .unwrap()
                .encode()
                .len()
                * 2
        })
        .sum();
    assert!(answered > 0, "requests are answered");
    assert!(
        answered <= SYNC_ANSWER_BYTES_PER_SLOT,
        "{answered} bytes answered for {asked} bytes asked"
    );
    assert!(answered < 50 * one_chain, "budget shared, not per request");
}

#[test]
fn a_refused_payload_spends_no_nonce_and_the_next_one_lands() {
    let (genesis, keys) = community(3);
    let mut net = LockstepNet::new(&genesis, &keys).unwrap();
    run(&mut net, 3_000);
    let to = net.nodes[1].member();
    let sign = |net: &mut LockstepNet, amount: u64| {
        net.nodes[0]
            .handle(Input::Sign(Box::new(TxPayload::Transfer {
                to,
                amount: MicroCredits::new(amount),
            })))
            .unwrap()
    };
    // Zero credits: refused at once, with the rule, and nothing signed.
    let refused = sign(&mut net, 0);
    assert!(
        refused
            .iter()
            .any(|e| matches!(e, Effect::Rejected { class, .. } if class == "zero_amount")),
        "{refused:?}"
    );
    assert!(!refused
        .iter()
        .any(|e| matches!(e, Effect::Submitted { .. })));
    // More than the balance: refused too.
    let refused = sign(&mut net, 10_000_000);
    assert!(refused.iter().any(|e| matches!(e, Effect::Rejected { .. })));
    // The next valid one gets the next nonce, is announced, and lands.
    let accepted = sign(&mut net, 42);
    assert!(accepted
        .iter()
        .any(|e| matches!(e, Effect::Submitted { .. })));
    for e in accepted {
        if let Effect::Publish(m) = e {
            for i in 1..3 {
                net.input(i, Input::Bus(m.clone())).unwrap();
            }
        }
    }
    run(&mut net, 10_000);
    let state = net.nodes[2].chain().chain().head_state().clone();
    assert_eq!(state.account(&to).balance.get(), 1_000_042);
    assert_eq!(state.account(&net.nodes[0].member()).nonce, 1);
}
