use super::*;

#[test]
fn algorithm_names_round_trip() {
    for a in KeyAlgorithm::ALL {
        assert_eq!(KeyAlgorithm::parse(a.name()), Some(a));
    }
    assert_eq!(KeyAlgorithm::parse("ec-p521"), None);
    assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcP256);
}
