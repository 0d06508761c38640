use super::decode::{decode_raw, scale};
use super::model::PointType;
use super::*;

fn walk(image: &SunSpecImage, fail_at: Option<u16>) -> Option<ScanResult> {
    let mut s = Scanner::new(WordOrder::BigEndian);
    let mut reads = 0;
    loop {
        match s.step() {
            Step::Done => return s.finish(),
            Step::Read { addr, count } => {
                assert!(count <= 125, "read of {count} registers");
                reads += 1;
                assert!(reads < 1000);
                let answer = if Some(addr) == fail_at {
                    None
                } else {
                    image.read(addr, count)
                };
                s.feed(answer);
            }
        }
    }
}

fn inverter(base: u16, common_len: Option<u16>) -> SunSpecImage {
    let mut img = SunSpecImage::new(base);
    img.add_model(1, common_len).unwrap();
    img.set(1, "Mn", Value::Text("Gridlet".into())).unwrap();
    img.add_model(103, None).unwrap();
    img.set(103, "W", Value::Int(12345)).unwrap();
    img.set(103, "W_SF", Value::Int(-1)).unwrap();
    img.set(103, "WH", Value::Uint(987_654)).unwrap();
    img.set(103, "WH_SF", Value::Int(1)).unwrap();
    img.add_model(701, None).unwrap();
    img.end();
    img
}

#[test]
fn walk_finds_models_at_every_base_and_both_common_lengths() {
    for base in [40000u16, 0, 50000] {
        for common in [None, Some(65)] {
            let img = inverter(base, common);
            let scan = walk(&img, None).expect("SunS found");
            assert_eq!(scan.base, base);
            let ids: Vec<u16> = scan.models.iter().map(|m| m.id).collect();
            assert_eq!(ids, vec![1, 103, 701]);
            assert_eq!(scan.models[0].length, common.unwrap_or(66));
            let inv = &scan.models[1];
            assert_eq!(
                inv.point("W"),
                Some(&Value::Scaled {
                    raw: 12345,
                    exp: -1
                })
            );
            assert_eq!(inv.point("W").unwrap().as_f64(), Some(1234.5));
            // Positive scale factor.
            assert_eq!(inv.point("WH").unwrap().as_f64(), Some(9_876_540.0));
            // Not implemented points stay not implemented, never 0.
            assert_eq!(inv.point("DCW"), Some(&Value::NotImplemented));
            assert_eq!(
                scan.models[0].point("Mn"),
                Some(&Value::Text("Gridlet".into()))
            );
            assert_eq!(scan.stopped, "end");
        }
    }
}

#[test]
fn missing_end_marker_and_unreadable_model_stop_the_walk() {
    let mut img = SunSpecImage::new(40000);
    img.add_model(1, None).unwrap();
    img.add_model(103, None).unwrap();
    // no end marker: reading past the image fails
    let scan = walk(&img, None).unwrap();
    assert_eq!(scan.models.len(), 2);
    assert_eq!(scan.stopped, "unreadable");

    let img = inverter(40000, None);
    let second = img.models[1].address;
    let scan = walk(&img, Some(second)).unwrap();
    assert_eq!(scan.models.len(), 1);
}

#[test]
fn a_model_over_125_registers_is_read_in_parts() {
    let img = inverter(0, None);
    let scan = walk(&img, None).unwrap();
    let m701 = scan.models.iter().find(|m| m.id == 701).unwrap();
    assert_eq!(m701.length, 153);
}

#[test]
fn no_marker_anywhere_is_none() {
    let mut s = Scanner::new(WordOrder::BigEndian);
    while let Step::Read { .. } = s.step() {
        s.feed(Some(&[0, 0]));
    }
    assert!(s.finish().is_none());
}

#[test]
fn every_sentinel_is_not_implemented() {
    use PointType as T;
    let cases: &[(T, &[u16])] = &[
        (T::Int16, &[0x8000]),
        (T::Uint16, &[0xFFFF]),
        (T::Enum16, &[0xFFFF]),
        (T::Bitfield16, &[0xFFFF]),
        (T::Acc16, &[0]),
        (T::Int32, &[0x8000, 0]),
        (T::Uint32, &[0xFFFF, 0xFFFF]),
        (T::Acc32, &[0, 0]),
        (T::Int64, &[0x8000, 0, 0, 0]),
        (T::Uint64, &[0xFFFF; 4]),
        (T::Float32, &[0x7FC0, 0]),
        (T::Float64, &[0x7FF8, 0, 0, 0]),
        (T::String, &[0, 0x4142]),
        (T::Sunssf, &[0x8000]),
        (T::Eui48, &[0, 0xFFFF, 0xFFFF, 0xFFFF]),
        (T::Ipaddr, &[0, 0]),
    ];
    for (ty, words) in cases {
        assert_eq!(
            decode_raw(*ty, words, WordOrder::BigEndian),
            Value::NotImplemented,
            "{ty:?}"
        );
    }
    assert_eq!(
        decode_raw(T::Int16, &[0xFFFF], WordOrder::BigEndian),
        Value::Int(-1)
    );
    assert_eq!(
        decode_raw(T::Uint32, &[0x0001, 0x0002], WordOrder::LittleEndian),
        Value::Uint(0x0002_0001)
    );
    assert_eq!(scale(12345, -1), 1234.5);
    assert_eq!(scale(7, 2), 700.0);
}

#[test]
fn a_point_with_an_unimplemented_scale_factor_is_not_implemented() {
    let mut img = SunSpecImage::new(40000);
    img.add_model(103, None).unwrap();
    img.set(103, "W", Value::Int(100)).unwrap();
    img.end();
    let scan = walk(&img, None).unwrap();
    assert_eq!(scan.models[0].point("W"), Some(&Value::NotImplemented));
}
